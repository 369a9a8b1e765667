// Every command, in the order `lsvd --help` lists them.

import type { Command } from "./command.ts";
import { fsckCommand } from "./fsck.ts";
import { gcCommand } from "./gc.ts";
import { lockCommand } from "./lock.ts";
import { mkcacheCommand } from "./mkcache.ts";
import { mkdiskCommand } from "./mkdisk.ts";
import { parseCommand } from "./parse.ts";
import { serveCommand } from "./serve.ts";

export const COMMANDS: Command[] = [mkdiskCommand, mkcacheCommand, parseCommand, serveCommand, fsckCommand, gcCommand, lockCommand];
