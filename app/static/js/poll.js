// Polling loops that stop when told, slow down after errors and never overlap.

/**
 * Call ``step()`` now and again after ``interval`` ms (a number or a function returning one) until ``step``
 * returns false or ``stop()`` is called. A thrown error goes to ``onError`` and the next try waits longer
 * (doubling, up to 15 s); a 401 (no key given) or a 404 stops the loop.
 */
export function poll(step, { interval = 1000, onError = null } = {}) {
  let stopped = false, timer = null, failures = 0, running = false, rerun = false;
  async function run() {
    if (stopped) return;
    if (running) { rerun = true; return; }
    running = true;
    clearTimeout(timer);
    let again = true;
    try {
      again = (await step()) !== false;
      failures = 0;
    } catch (err) {
      failures += 1;
      if (onError) onError(err);
      if (err && (err.status === 401 || err.status === 404)) again = false;
    } finally {
      running = false;
    }
    if (stopped || !again) return;
    if (rerun) { rerun = false; run(); return; }
    const wait = typeof interval === "function" ? interval() : interval;
    timer = setTimeout(run, failures ? Math.min(15000, wait * 2 ** failures) : wait);
  }
  run();
  return {
    stop() { stopped = true; clearTimeout(timer); },
    now() { run(); },
  };
}
