/**
 * Measured figures printed in one greppable form, `[reliability] <scenario> [<backend>] <text>`, so a
 * test run doubles as the source of the numbers quoted in docs/reliability.md.
 */
import { SOAK } from "./scale.ts";

/** Prints one measured figure: `[reliability] scenario [backend(, soak)] text`. */
export function report(scenario: string, backend: string, text: string): void {
  console.log(`[reliability] ${scenario} [${backend}${SOAK ? ", soak" : ""}] ${text}`);
}
