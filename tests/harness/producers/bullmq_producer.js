// BullMQ producer (and a worker that fails one job) for warroom's queue preset tests.
const { Queue, Worker } = require('bullmq');
const [port, name, prefix] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null };
const opts = prefix ? { connection, prefix } : { connection };
(async () => {
  const q = new Queue(name, opts);
  const a = await q.add('send', { to: 'a' });
  const b = await q.add('send', { to: 'b' });
  const c = await q.add('send', { to: 'c' }, { priority: 3 });
  await q.add('send', { to: 'later' }, { delay: 3600000 });
  // a job that fails once, through a real Worker
  const broken = new Queue(name + '_broken', opts);
  await broken.add('send', { to: 'x' }, { attempts: 1 });
  const failed = new Promise(resolve => {
    const w = new Worker(name + '_broken', async () => { throw new Error('boom'); }, { ...opts, autorun: true });
    w.on('failed', async () => { await w.close(); resolve(); });
  });
  await failed;
  await broken.close();
  // a paused queue still takes jobs (BullMQ 5+: into :wait, meta `paused` set)
  const paused = new Queue(name + '_paused', opts);
  await paused.pause();
  await paused.add('send', { to: 'p' });
  await paused.close();
  console.log(JSON.stringify({ ids: [a.id, b.id, c.id], timestamps: [a.timestamp, b.timestamp, c.timestamp],
                               version: require('bullmq/package.json').version }));
  await q.close();
})().catch(e => { console.error(e && e.stack || e); process.exit(1); });
