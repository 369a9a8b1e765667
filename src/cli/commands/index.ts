// Every command, in the order `lsvd --help` lists them.

import type { Command } from "./command.ts";
import { fsckCommand } from "./fsck.ts";
import { gcCommand } from "./gc.ts";
import { lockCommand } from "./lock.ts";
import { mkcacheCommand } from "./mkcache.ts";
import { mkdiskCommand } from "./mkdisk.ts";
import { parseCommand } from "./parse.ts";
import { serveCommand } from "./serve.ts";
import { importCommand } from "./import.ts";
import { exportCommand } from "./export.ts";
import { lsCommand } from "./ls.ts";
import { rmCommand } from "./rm.ts";
import { resizeCommand } from "./resize.ts";
import { statusCommand } from "./status.ts";
import { snapshotCommand } from "./snapshot.ts";
import { infoCommand } from "./info.ts";
import { cloneCommand } from "./clone.ts";

export const COMMANDS: Command[] = [
  mkdiskCommand,
  mkcacheCommand,
  parseCommand,
  serveCommand,
  statusCommand,
  fsckCommand,
  gcCommand,
  lockCommand,
  importCommand,
  exportCommand,
  lsCommand,
  cloneCommand,
  rmCommand,
  resizeCommand,
  snapshotCommand,
  infoCommand,
];
