// The volume's time seam lives in src/util/clock.ts (the backend's retrying store uses it too); re-exported here.
export { systemClock, type Clock, type CrashPoint, type TimerHandle } from "../util/clock.ts";
