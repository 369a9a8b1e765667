// A store view that a simulated crash cuts off: after fence(), every call of the dead incarnation fails and does
// nothing, as a killed process cannot write any more. Calls already forwarded complete normally.

import { IOError } from "../../src/errors.ts";
import { WrappingStore, type StoreOp } from "../../src/backend/wrapping_store.ts";

export class FencedStore extends WrappingStore {
  private fenced = false;

  fence(): void {
    this.fenced = true;
  }

  protected override async call<T>(op: StoreOp, name: string, forward: () => Promise<T>): Promise<T> {
    if (this.fenced) throw new IOError(`Cannot ${op} object ${name}: this incarnation crashed`);
    return forward();
  }

  override async close(): Promise<void> {}
}
