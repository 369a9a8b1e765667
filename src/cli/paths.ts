// Files a command creates (a cache file, an exported image): one rule for every command (README, "Commands"):
// missing parent directories are created, like `mkdir -p`; a parent that exists but is not a directory is refused.
// The file backend's directory (mkdisk, import) follows the same rule (FileStore.open with create).

import { mkdirSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { InvalidArgumentError } from "../errors.ts";

/** Creates the directories above `path` that are missing; throws InvalidArgumentError naming the one in the way. */
export function prepareParentDirectory(path: string, what: string): void {
  const directory = dirname(resolve(path));
  try {
    mkdirSync(directory, { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new InvalidArgumentError(`Cannot create the directory ${directory} for ${what} ${path}: ${code ?? (error as Error).message}`);
  }
  if (!statSync(directory).isDirectory()) throw new InvalidArgumentError(`Cannot create ${what} ${path}: ${directory} is not a directory`);
}
