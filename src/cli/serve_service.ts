// What `lsvd serve` tells the host it runs on, at each step of its start-up order (serve.ts): listeners inherited
// from systemd (socket activation), sd_notify readiness and status (src/ops/systemd.ts), and --pid-file
// (src/ops/pid_file.ts).
//   before binding   : claim the pid file (a live holder refuses the start), take the inherited sockets;
//   before recovery  : STATUS=recovering;
//   serving          : write the pid file (the lease is held and every listener bound), READY=1, then the
//                      "serving on" log lines (whoever waits for those finds the pid file written);
//   shutdown         : STOPPING=1, then STATUS= for every line saying what the shutdown waits for;
//   exit             : remove the pid file (not after a second signal's immediate exit: it is stale then).

import { InvalidArgumentError } from "../errors.ts";
import { PidFile } from "../ops/pid_file.ts";
import { ServiceNotifier, inheritedListeners, type InheritedListener } from "../ops/systemd.ts";
import type { LogFn } from "../util/log.ts";

export const SERVICE_HELP = `Running under systemd (unit files in systemd/ of the source tree):
  --pid-file PATH        write the server's pid to PATH once the lease is held and the listeners bound (before
                         READY=1); removed at exit after a shutdown; a PATH that names a running process, or
                         that holds no pid, refuses the start (exit 1); a stale one (its process is gone) is replaced
  Socket activation: with LISTEN_FDS/LISTEN_PID set for this process (systemd .socket units,
  systemd-socket-activate), serve listens on the passed descriptors 3, 4, ... (listening unix or TCP stream
  sockets) instead of --socket/--listen, which are then refused; it never removes a passed unix socket's path.
  Readiness: with NOTIFY_SOCKET set (Type=notify), serve sends STATUS= while it recovers, READY=1 once recovery
  is done and clients are served, STOPPING=1 when a shutdown begins, and STATUS= lines while that waits.`;

export class ServeService {
  private constructor(
    readonly inherited: InheritedListener[],
    private readonly notifier: ServiceNotifier,
    private readonly pidFile: PidFile | null,
  ) {}

  /** Before anything is bound: reads the environment, claims the pid file; refuses --socket/--listen with LISTEN_FDS. */
  static begin(options: { pidFile?: string; socket?: string; listen?: string }, log: LogFn): ServeService {
    const pidFile = options.pidFile === undefined ? null : PidFile.claim(options.pidFile);
    const inherited = inheritedListeners();
    if (inherited.length > 0 && (options.socket !== undefined || options.listen !== undefined)) {
      throw new InvalidArgumentError(
        `--socket and --listen cannot be combined with socket activation (${inherited.length} socket(s) passed in LISTEN_FDS): serve listens on the passed sockets`,
      );
    }
    return new ServeService(inherited, ServiceNotifier.fromEnvironment(log), pidFile);
  }

  recovering(volume: string): void {
    this.notifier.status(`recovering volume ${volume}`);
  }

  /** The lease is held, recovery done, every listener bound and clients greeted. */
  serving(volume: string, addresses: string[]): void {
    this.pidFile?.write();
    this.notifier.ready(`serving ${volume} on ${addresses.join(", ")}`);
  }

  stopping(why: string): void {
    this.notifier.stopping(`shutting down (${why}): draining requests, flushing to the backend`);
  }

  /** `log` that also reports each line as the service status (the lines a waiting shutdown prints). */
  statusLog(log: LogFn): LogFn {
    return (line) => {
      log(line);
      this.notifier.status(line);
    };
  }

  exiting(): void {
    this.pidFile?.remove();
  }
}
