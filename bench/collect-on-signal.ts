// Loaded into the Node targets of the idle-memory workload only (`node --expose-gc --import
// this`): SIGUSR2 runs a full garbage collection, so the bench can read RSS once garbage is gone.
// A C pooler frees memory the moment it is done with it; a Node process holds garbage until its
// next collection, whose timing is V8's, and an RSS reading then says when the collector last
// ran more than what the clients cost. Never part of sluice itself.
const collect = (globalThis as { gc?: () => void }).gc;
if (typeof collect === 'function') {
  process.on('SIGUSR2', () => {
    // Twice: the first collection can leave objects whose finalizers free more.
    collect();
    collect();
  });
}
