// The one place koffi is loaded. Only ffi/ imports this module.
//
// Why the raw addon and not `import koffi from "koffi"`: koffi's JS entry resolves its native addon at run time
// from node_modules, which a `bun build --compile` binary does not have beside it. A static require of the addon
// file lets the bundler embed it; Bun extracts it to $TMPDIR when the binary starts. The raw addon exposes the
// whole koffi API (load, func, struct, pointer, view, ...).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require("@koromix/koffi-linux-x64/linux_x64/koffi.node");

// Types come from the koffi package; the value is the embedded addon.
import type * as KoffiTypes from "koffi";
export const koffi = addon as typeof KoffiTypes;
export type { LibraryHandle, TypeObject, KoffiFunc } from "koffi";
