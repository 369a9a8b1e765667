// MemoryStore (src/backend/memory_store.ts) against the ObjectStore contract.
import { MemoryStore } from "../../src/backend/memory_store.ts";
import { objectStoreContract } from "./object_store_contract.ts";

// A second client of a memory store is the same store.
objectStoreContract("MemoryStore", async () => new MemoryStore(), { openSecondClient: async (first) => first });
