#!/usr/bin/env node
/*
 * Editor open time of Label Studio 1.23.2 frames tasks (<Image valueList>) holding one big brush prediction.
 * Run by benchmarks/editor_open.py, which sets LS up; modelled on tests/browser/annotate.js (same login, browser flags,
 * selectors and store paths: see its header).
 *
 *   NODE_PATH=tests/browser/node_modules node benchmarks/editor_open.js --url http://127.0.0.1:8080 --project 1 \
 *       --tasks ours:1:402,plain:2:400 --runs 3 --out artifacts/editor_open [--warmup 1] [--objects 2] [--no-profile]
 *
 * --tasks: name:task_id:expected_regions,...  Every open is a fresh page (one browser profile: the HTTP cache is
 * shared, warmed up by the uncounted opens) of /projects/<p>/data?tab=0&task=<t>. An init script polls every 25 ms and
 * stamps performance.now() (ms since navigation start) at: `htx_ms` the editor store has a selected annotation;
 * `store_ms` it holds every expected region (LS turns the prediction into a draft annotation); `rows_ms` the region
 * list (.lsf-outliner, a virtual list) renders rows; `ready_ms` all that, plus frame 1 downloaded and every brush
 * region of frame 1 drawn on its own Konva layer. Also per open: `task_api_ms` (responseEnd of GET /api/tasks/<t>),
 * `task_api_kb`, `api_to_store_ms` (store_ms - task_api_ms: the editor building the regions), `store_to_ready_ms`;
 * main-thread long tasks before ready; `cpu_main_ms`, `script_ms`: the renderer main thread's CPU time
 * and script time from navigation to ready (+ up to 50 ms of polling; CDP Performance.getMetrics ThreadTime and
 * ScriptDuration: CPU time, so less sensitive than wall time to other load on the machine); JS heap used after a
 * forced GC (CDP) at ready (`heap_ready_mb`) and after paging (`heap_paged_mb`); `page5_ms`: five clicks on the
 * pager's next button, each waiting for the store to move, until frame 6 shows with its masks drawn.
 * The first counted open of each variant also takes screenshots (<name>-frame1.png, <name>-frame6.png) and scrolls
 * the whole region list to check its last row index. With profiling on, one more (uncounted) open per variant records
 * a CPU profile until ready: top self time per function, and inclusive time per named (unminified) function.
 * Output: one JSON line on stdout; progress on stderr. Exit 1 on a failed check.
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

function parseArgs(argv) {
  const o = { runs: '3', warmup: '1', objects: '2', timeout: '1800', profile: true, imageTag: 'frames',
    user: process.env.LS_USER || 'admin@example.com', password: process.env.LS_PASSWORD || 'admin12345',
    chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`unexpected argument ${argv[i]}`);
    if (m[1] === 'no-profile') { o.profile = false; continue; }
    const key = m[1].replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    o[key] = m[2] !== undefined ? m[2] : argv[++i];
  }
  for (const k of ['url', 'project', 'tasks', 'out']) if (!o[k]) throw new Error(`--${k} is required`);
  o.url = o.url.replace(/\/+$/, '');
  o.tasks = o.tasks.split(',').map((s) => {
    const [name, task, expected] = s.split(':');
    return { name, task: Number(task), expected: Number(expected) };
  });
  for (const k of ['runs', 'warmup', 'objects', 'timeout']) o[k] = Number(o[k]);
  return o;
}

const log = (...a) => process.stderr.write(`[editor_open ${new Date().toISOString().slice(11, 23)}] ${a.join(' ')}\n`);
class CheckFailed extends Error {}
const check = (cond, msg) => { if (!cond) throw new CheckFailed(msg); };

// ------------------------------------------------------------------------------------ in-page code (browser side)
// Installed before any page script: polls the editor and stamps milestones into window.__bench.
function probeInit({ expected, imageTag, task }) {
  const B = window.__bench = { marks: {}, longTasks: [], task };
  try {
    new PerformanceObserver((l) => { for (const e of l.getEntries()) B.longTasks.push([e.startTime, e.duration]); })
      .observe({ type: 'longtask', buffered: true });
  } catch (_) { /* no long task API */ }
  // Frame `item` of the Image tag: is it downloaded, and is every brush region on it drawn (non-transparent pixels)?
  B.drawn = (item) => {
    const ann = window.Htx.annotationStore.selected;
    const img = ann.names.get(imageTag);
    const ent = img.currentImageEntity;
    if (img.currentImage !== item || !ent || !ent.downloaded) return false;
    const ids = (img.regs || []).filter((r) => r.type === 'brushregion').map((r) => r.cleanId || r.id);
    const K = window.Konva;
    if (!ids.length || !K || !K.stages) return false;
    let drawn = 0;
    for (const stage of K.stages) {
      for (const layer of stage.getLayers()) {
        if (!ids.includes(layer.id())) continue;
        const c = layer.getCanvas()._canvas;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < d.length; i += 64) if (d[i] > 0) { drawn++; break; }
      }
    }
    return drawn >= ids.length;
  };
  const stamp = (k) => { if (B.marks[k] === undefined) B.marks[k] = performance.now(); };
  const timer = setInterval(() => {
    try {
      const ann = window.Htx && window.Htx.annotationStore && window.Htx.annotationStore.selected;
      if (!ann || !ann.names || !ann.names.get(imageTag)) return;
      stamp('htx_ms');
      if ((ann.regions || []).length < expected) return;
      stamp('store_ms');
      if (!document.querySelector('.lsf-outliner .lsf-outliner-item')) return;
      stamp('rows_ms');
      if (!B.drawn(0)) return;
      stamp('ready_ms');
      clearInterval(timer);
    } catch (e) { B.error = String(e); }
  }, 25);
}

// After ready: what the editor holds (for the checks) and the task API timing.
function editorFacts({ imageTag, task }) {
  const ann = window.Htx.annotationStore.selected;
  const img = ann.names.get(imageTag);
  const byType = {};
  let withMeta = 0;
  const origins = {};
  for (const r of ann.regions) {
    byType[r.type] = (byType[r.type] || 0) + 1;
    if (r.meta && r.meta.text && r.meta.text.length) withMeta++;
    origins[r.origin] = (origins[r.origin] || 0) + 1;
  }
  const B = window.__bench;
  const api = performance.getEntriesByType('resource').filter((e) => new RegExp(`/api/tasks/${task}(/|\\?|$)`).test(e.name));
  const last = api[api.length - 1];
  const ready = B.marks.ready_ms;
  const lt = B.longTasks.filter(([s]) => s < ready);
  return {
    regions: ann.regions.length, by_type: byType, with_meta: withMeta, origins, frames: img.imageEntities.length,
    brush_on_frame1: (img.regs || []).filter((r) => r.type === 'brushregion').length,
    task_api_ms: last ? last.responseEnd : null, task_api_kb: last ? last.encodedBodySize / 1024 : null,
    long_tasks_ms: lt.reduce((a, [, d]) => a + d, 0), long_tasks_n: lt.length,
    longest_task_ms: lt.reduce((a, [, d]) => Math.max(a, d), 0),
  };
}

// Five clicks on the pager's next button, each waiting until the store moved; then until frame 6 is drawn.
async function pageForward({ steps }) {
  const B = window.__bench;
  const img = window.Htx.annotationStore.selected.names.get('frames');
  const next = () => document.querySelector('.lsf-pagination__btn_arrow-right:not(.lsf-pagination__btn_arrow-right-double)');
  if (!next()) return { error: 'no pager next button' };
  const until = async (cond, ms) => {
    const end = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > end) return false;
      await new Promise((r) => setTimeout(r, 5));
    }
    return true;
  };
  const t0 = performance.now();
  const start = img.currentImage;
  for (let i = 1; i <= steps; i++) {
    next().click();
    if (!await until(() => img.currentImage === start + i, 20000)) return { error: `pager stuck at ${img.currentImage}` };
  }
  const moved = performance.now() - t0;
  if (!await until(() => B.drawn(start + steps), 30000)) return { error: `frame ${start + steps + 1} not drawn` };
  const pager = (document.querySelector('.lsf-pagination__page-indicator') || {}).innerText || '';
  return { page5_ms: performance.now() - t0, page5_moved_ms: moved, item: img.currentImage, pager: pager.replace(/\s+/g, ' ') };
}

// Scroll the virtual region list to the end: the highest row index shown (annotate.js::outlinerRows, condensed).
async function outlinerMaxIndex() {
  const holder = document.querySelector('.lsf-outliner .lsf-tree-list-holder');
  let max = 0;
  const collect = () => {
    for (const row of document.querySelectorAll('.lsf-outliner .lsf-outliner-item .lsf-outliner-item__index')) {
      max = Math.max(max, parseInt(row.innerText, 10) || 0);
    }
  };
  collect();
  if (holder) {
    for (let top = 0; top <= holder.scrollHeight; top += Math.max(40, holder.clientHeight - 40)) {
      holder.scrollTop = top;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      collect();
    }
    holder.scrollTop = holder.scrollHeight;
    await new Promise((r) => setTimeout(r, 300));
    collect();
    holder.scrollTop = 0;
  }
  return max;
}

// ------------------------------------------------------------------------------------------------------ node side
async function heapMb(cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  const h = await cdp.send('Runtime.getHeapUsage');
  return h.usedSize / 1048576;
}

// Self time per function, and inclusive time per named (not minified) function, from a CDP CPU profile.
function profileTops(profile, n = 15) {
  const byNode = new Map(profile.nodes.map((nd) => [nd.id, nd]));
  const parent = new Map();
  for (const nd of profile.nodes) for (const c of nd.children || []) parent.set(c, nd.id);
  const name = (nd) => {
    const cf = nd.callFrame;
    const where = cf.url ? `${cf.url.split('/').pop().split('?')[0]}:${cf.lineNumber + 1}` : '';
    return `${cf.functionName || '(anonymous)'} ${where}`.trim();
  };
  const self = new Map();
  const incl = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const ms = (profile.timeDeltas[i] || 0) / 1000;
    let nd = byNode.get(profile.samples[i]);
    self.set(name(nd), (self.get(name(nd)) || 0) + ms);
    const seen = new Set();
    for (; nd; nd = byNode.get(parent.get(nd.id))) {
      const fn = nd.callFrame.functionName;
      if (!fn || fn.length < 4 || seen.has(fn)) continue; // minified names say nothing
      seen.add(fn);
      incl.set(fn, (incl.get(fn) || 0) + ms);
    }
  }
  const top = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, +v.toFixed(1)]);
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  return { total_ms: total, top_self: top(self), top_inclusive_named: top(incl) };
}

// Main-thread CPU time, task and script time of the page's renderer (CDP Performance.getMetrics, seconds -> ms).
async function cpuMetrics(cdp) {
  const { metrics } = await cdp.send('Performance.getMetrics');
  const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
  const ms = (k) => (m[k] === undefined ? null : m[k] * 1000);
  return { cpu_main_ms: ms('ThreadTime'), cpu_process_ms: ms('ProcessTime'), task_ms: ms('TaskDuration'),
    script_ms: ms('ScriptDuration'), layout_style_ms: (ms('LayoutDuration') || 0) + (ms('RecalcStyleDuration') || 0) };
}

async function openOnce(ctx, opts, t, { shots = false, profile = false } = {}) {
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => { if (errors.length < 10) errors.push(String(e).slice(0, 300)); });
  const cdp = await ctx.newCDPSession(page);
  try {
    await page.addInitScript(probeInit, { expected: t.expected, imageTag: opts.imageTag, task: t.task });
    if (profile) {
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.setSamplingInterval', { interval: 500 });
      await cdp.send('Profiler.start');
    }
    await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
    const before = await cpuMetrics(cdp);
    await page.goto(`${opts.url}/projects/${opts.project}/data?tab=0&task=${t.task}`, { waitUntil: 'commit' });
    await page.waitForFunction(() => window.__bench && (window.__bench.marks.ready_ms !== undefined || window.__bench.error),
      null, { timeout: 180000, polling: 50 }).catch(() => {});
    const after = await cpuMetrics(cdp);
    const bench = await page.evaluate(() => ({ marks: window.__bench.marks, error: window.__bench.error || null }));
    const r = { variant: t.name, task: t.task, ...bench.marks };
    for (const k of Object.keys(after)) r[k] = after[k] === null ? null : after[k] - (before[k] || 0);
    if (profile) {
      const { profile: prof } = await cdp.send('Profiler.stop');
      r.profile = profileTops(prof);
    }
    check(!bench.error, `probe error: ${bench.error}`);
    check(r.ready_ms !== undefined, `${t.name}: editor not ready in 180 s (marks ${JSON.stringify(bench.marks)}; errors ${errors})`);
    Object.assign(r, await page.evaluate(editorFacts, { imageTag: opts.imageTag, task: t.task }));
    if (r.task_api_ms !== null) r.api_to_store_ms = r.store_ms - r.task_api_ms; // the editor building the regions
    r.store_to_ready_ms = r.ready_ms - r.store_ms; // region list + frame 1 drawn
    check(r.regions === t.expected, `${t.name}: ${r.regions} regions in the editor, expected ${t.expected}`);
    check(r.brush_on_frame1 === opts.objects, `${t.name}: ${r.brush_on_frame1} brush regions on frame 1, expected ${opts.objects}`);
    if (profile) return r;
    await page.waitForTimeout(1000); // let the editor settle before the heap and the pager
    r.heap_ready_mb = await heapMb(cdp);
    await page.mouse.move(5, 450);
    if (shots) await page.screenshot({ path: path.join(opts.out, `${t.name}-frame1.png`) });
    Object.assign(r, await page.evaluate(pageForward, { steps: 5 }));
    check(!r.error, `${t.name}: paging failed: ${r.error}`);
    check(r.item === 5 && r.pager.startsWith('6 of'), `${t.name}: pager at item ${r.item} ("${r.pager}"), expected 6 of ...`);
    r.heap_paged_mb = await heapMb(cdp);
    if (shots) {
      await page.waitForTimeout(500); // the pager tooltip fades
      await page.screenshot({ path: path.join(opts.out, `${t.name}-frame6.png`) });
      r.outliner_max_index = await page.evaluate(outlinerMaxIndex);
      check(r.outliner_max_index === t.expected,
        `${t.name}: the region list's last row is #${r.outliner_max_index}, expected #${t.expected}`);
    }
    r.page_errors = errors;
    return r;
  } finally {
    await cdp.detach().catch(() => {});
    await page.close().catch(() => {});
  }
}

async function main() {
  let opts;
  try { opts = parseArgs(process.argv.slice(2)); } catch (e) {
    process.stderr.write(`editor_open.js: ${e.message}\n`);
    process.exit(2);
  }
  fs.mkdirSync(opts.out, { recursive: true });
  const summary = { ok: false, runs: [], warmup_runs: [], profiles: {}, screenshots: {}, checks: {} };
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-editor-open-'));
  const killer = setTimeout(() => {
    summary.error = `timed out after ${opts.timeout} s`;
    process.stdout.write(JSON.stringify(summary) + '\n');
    fs.rmSync(userDataDir, { recursive: true, force: true });
    process.exit(1);
  }, opts.timeout * 1000);
  let ctx = null;
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: opts.chromium, headless: true, viewport: { width: 1400, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    summary.browser_version = ctx.browser() ? ctx.browser().version() : null;
    const login = ctx.pages()[0] || await ctx.newPage();
    await login.goto(`${opts.url}/user/login/`);
    await login.fill('input[name=email]', opts.user);
    await login.fill('input[name=password]', opts.password);
    await Promise.all([
      login.waitForURL((u) => !u.pathname.startsWith('/user/login'), { timeout: 60000 }),
      login.click('button[type=submit], input[type=submit]'),
    ]).catch(() => {});
    check(!new URL(login.url()).pathname.startsWith('/user/login'), `login as ${opts.user} failed`);
    await login.goto('about:blank');

    const fmt = (r) => `ready ${r.ready_ms.toFixed(0)} ms (store ${r.store_ms.toFixed(0)}, rows ${r.rows_ms.toFixed(0)}, `
      + `main-thread CPU ${r.cpu_main_ms === null ? '?' : r.cpu_main_ms.toFixed(0)} ms)`
      + (r.page5_ms !== undefined ? `, page x5 ${r.page5_ms.toFixed(0)} ms, heap ${r.heap_ready_mb.toFixed(1)} MB` : '');
    for (let w = 0; w < opts.warmup; w++) {
      for (const t of opts.tasks) {
        const r = await openOnce(ctx, opts, t);
        summary.warmup_runs.push(r);
        log(`warm-up ${t.name}: ${fmt(r)}`);
      }
    }
    const shotDone = new Set();
    for (let i = 0; i < opts.runs; i++) {
      const order = i % 2 === 0 ? opts.tasks : [...opts.tasks].reverse(); // ABBA: drift hits both alike
      for (const t of order) {
        const shots = !shotDone.has(t.name);
        const r = await openOnce(ctx, opts, t, { shots });
        r.run = i;
        if (shots) {
          shotDone.add(t.name);
          summary.screenshots[t.name] = [`${t.name}-frame1.png`, `${t.name}-frame6.png`].map((f) => path.join(opts.out, f));
          summary.checks[t.name] = { regions: r.regions, by_type: r.by_type, with_meta: r.with_meta, origins: r.origins,
            frames: r.frames, brush_on_frame1: r.brush_on_frame1, outliner_max_index: r.outliner_max_index };
        }
        summary.runs.push(r);
        log(`run ${i + 1}/${opts.runs} ${t.name}: ${fmt(r)}`);
      }
    }
    if (opts.profile) {
      for (const t of opts.tasks) {
        const r = await openOnce(ctx, opts, t, { profile: true });
        summary.profiles[t.name] = { ready_ms: r.ready_ms, ...r.profile };
        log(`profiled ${t.name}: ready ${r.ready_ms.toFixed(0)} ms; top self ${r.profile.top_self.slice(0, 4).map((x) => x.join(' ')).join('; ')}`);
      }
    }
    summary.ok = true;
  } catch (e) {
    summary.error = String(e.message || e).replace(/\u001b\[[0-9;]*m/g, '').split('\n').slice(0, 3).join(' | ');
  } finally {
    clearTimeout(killer);
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(summary) + '\n');
  if (!summary.ok) {
    process.stderr.write(`editor_open.js FAILED: ${summary.error}\n`);
    process.exitCode = 1;
  }
}

main();
