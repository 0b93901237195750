// The saefw feature report viewer: draws data/summary.js (header, density histogram, the feature
// table) and, per feature, data/shard_NNNN.js loaded on demand. Plain JS from file://: the data
// files call saefwReport.summary(...) and saefwReport.shard(n, ...). Every string from the data
// goes into the page as text (textContent), never as HTML.
(function () {
  'use strict';

  var SVG_NS = 'http://www.w3.org/2000/svg';
  var ROW_H = 28;          // px, fixed so the table can draw only the rows in view
  var OVERSCAN = 12;       // rows drawn beyond the visible ones on each side

  var S = null;            // the summary object
  var F = null;            // per-feature columns of the summary, for sorting and filtering
  var order = null;        // positions in S.features in the current sort order
  var sorted = {};         // "key dir" -> that order, kept: a header clicked again costs nothing
  var timing = {};         // ms taken by the last summary drawing and sort, for the tests
  var rows = [];           // the sorted indices that pass the filters
  var sortKey = 'i', sortDir = 1;
  var shards = {};         // shard number -> shard object
  var shardErr = {};       // shard number -> why it could not be loaded
  var shardWait = {};      // shard number -> callbacks waiting for it
  var shardTag = {};       // shard number -> its <script>, added once
  var indexScrollY = 0;

  // ---- small DOM helpers ----

  function el(tag, attrs, kids) { return build(document.createElement(tag), attrs, kids); }
  function sv(tag, attrs, kids) { return build(document.createElementNS(SVG_NS, tag), attrs, kids); }

  function build(e, attrs, kids) {
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'text') e.textContent = String(v);
        else if (k === 'class') e.setAttribute('class', v);
        else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, String(v));
      });
    }
    (kids || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    });
    return e;
  }

  function $(id) { return document.getElementById(id); }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

  // ---- numbers and tokens as text ----

  function fmt(x) {
    if (typeof x !== 'number' || !isFinite(x)) return String(x);
    if (x === 0) return '0';
    var a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
    return String(+x.toPrecision(4));
  }
  function fmtDensity(d) { return d > 0 ? d.toExponential(2) : '0'; }
  function fmtInt(n) { return typeof n === 'number' ? n.toLocaleString('en-US') : String(n); }
  function pad4(n) { var s = String(n); while (s.length < 4) s = '0' + s; return s; }

  var WS = { ' ': '·', '\n': '↵', '\t': '→', '\u00a0': '⍽' };

  // A token's characters as [text, kind] pieces: kind '' for plain text, 'ws' for whitespace shown
  // as a glyph, 'ctl' for a control or invisible character shown as an escape, 'byte' for a \xNN
  // the engine wrote for a byte that is not UTF-8 on its own.
  var SPECIAL = /[\x00-\x20\x7f-\xa0\xad\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\\]/;

  function tokenPieces(s) {
    if (!SPECIAL.test(s)) return s ? [[s, '']] : [];
    var out = [], plain = '';
    var flush = function () { if (plain) { out.push([plain, '']); plain = ''; } };
    for (var k = 0; k < s.length; k++) {
      var ch = s[k], c = s.charCodeAt(k);
      if (WS.hasOwnProperty(ch)) { flush(); out.push([WS[ch], 'ws']); continue; }
      if (ch === '\\' && /^\\x[0-9a-fA-F]{2}/.test(s.slice(k, k + 4))) {
        flush(); out.push([s.slice(k, k + 4), 'byte']); k += 3; continue;
      }
      if (ch === '\r') { flush(); out.push(['\\r', 'ctl']); continue; }
      if (c < 0x20 || c === 0x7f) { flush(); out.push(['\\x' + (c < 16 ? '0' : '') + c.toString(16), 'ctl']); continue; }
      if ((c >= 0x80 && c <= 0x9f) || (c >= 0x200b && c <= 0x200f) || (c >= 0x2028 && c <= 0x202e) ||
          (c >= 0x2060 && c <= 0x2069) || c === 0xfeff || c === 0xad) {
        flush(); out.push(['\\u' + ('000' + c.toString(16)).slice(-4), 'ctl']); continue;
      }
      plain += ch;
    }
    flush();
    return out;
  }

  function tokenText(s) { return tokenPieces(String(s)).map(function (p) { return p[0]; }).join(''); }

  // A token drawn as a span of its visible pieces.
  function tokenSpan(s, cls, attrs) {
    var a = attrs || {};
    a['class'] = 'tok' + (cls ? ' ' + cls : '') + (S && S.tokenizer === null ? ' id' : '');
    var kids = tokenPieces(String(s)).map(function (p) {
      return p[1] ? el('span', { 'class': p[1], text: p[0] }) : p[0];
    });
    if (!kids.length) kids = [el('span', { 'class': 'ctl', text: '∅' })];
    return el('span', a, kids);
  }

  // ---- messages ----

  function message(text, kind) {
    var m = $('message');
    m.hidden = false;
    m.className = kind || 'error';
    m.appendChild(el('p', { text: text }));
  }

  function fail(text) {
    $('loading').hidden = true;
    document.body.dataset.state = 'error';
    message(text, 'error');
  }

  window.addEventListener('error', function (ev) {
    if (ev.target && ev.target !== window) return;      // resource errors are reported where they occur
    message('The viewer hit an error: ' + ev.message + (ev.filename ? ' (' + ev.filename.split('/').pop() + ':' + ev.lineno + ')' : ''), 'error');
  }, true);

  // The summary file never arrived: a folder with the viewer but no data, or a broken file.
  window.addEventListener('load', function () {
    if (!S && document.body.dataset.state === 'loading') {
      fail('No report data: data/summary.js was not loaded or did not call saefwReport.summary(...). ' +
           'Write a report with `saefw features CHECKPOINT --out DIR` and open DIR/index.html.');
    }
  });

  // ---- the summary: header, histograms, table ----

  function summary(obj) {
    if (S) return;
    if (!obj || typeof obj !== 'object' || !Array.isArray(obj.features) || !obj.sae) {
      fail('data/summary.js: not a saefw feature summary (no "sae" or "features").');
      return;
    }
    if (typeof obj.schema !== 'string' || obj.schema.indexOf('saefw-features/') !== 0) {
      fail('data/summary.js: unknown schema ' + JSON.stringify(obj.schema) + ' (this viewer reads saefw-features/1).');
      return;
    }
    var t0 = performance.now();
    S = obj;
    if (!(S.shard_size > 0)) S.shard_size = Math.max(1, S.features.length);
    prepareColumns();
    drawHeader();
    drawDensity();
    drawSparsity();
    drawRare();
    setupTable();
    $('loading').hidden = true;
    $('index-view').hidden = false;
    document.body.dataset.state = 'ready';
    timing.summary_ms = performance.now() - t0;
    window.addEventListener('hashchange', route);
    document.addEventListener('keydown', onKey);
    route();
  }

  function prepareColumns() {
    var n = S.features.length;
    F = { i: new Float64Array(n), density: new Float64Array(n), max_act: new Float64Array(n),
          mean_act: new Float64Array(n), top: new Array(n), search: new Array(n), at: {} };
    S.features.forEach(function (f, k) {
      var top = (f.top_logits || []).map(topStr);
      F.i[k] = f.i; F.density[k] = +f.density || 0; F.max_act[k] = +f.max_act || 0;
      F.mean_act[k] = +f.mean_act || 0;
      F.top[k] = top.length ? tokenText(top[0]).toLowerCase() : '';
      F.search[k] = (top.join('\u0001') + '\u0001' + top.map(tokenText).join('\u0001')).toLowerCase();
      F.at[f.i] = k;
    });
    order = new Array(n);
    for (var k = 0; k < n; k++) order[k] = k;
  }

  // A summary's top token: a string as the format says, or a shard-style {id, str} entry.
  function topStr(t) { return t !== null && typeof t === 'object' ? String(t.str !== undefined ? t.str : t.id) : String(t); }

  function nLive() {
    var live = 0;
    for (var k = 0; k < F.density.length; k++) if (F.density[k] > 0) live++;
    return live;
  }

  function drawHeader() {
    var sae = S.sae, live = nLive(), meta = clear($('meta'));
    var item = function (k, v, cls) { meta.appendChild(el('div', { 'class': cls || null }, [el('dt', { text: k }), el('dd', { text: v })])); };
    $('subtitle').textContent = (sae.model_name || '?') + ' · ' + (sae.hook_name || '?');
    item('Checkpoint', sae.checkpoint || '?', 'wide');
    item('Hook', sae.hook_name || '?');
    item('SAE', fmtInt(sae.d_in) + ' → ' + fmtInt(sae.d_sae) + ' features');
    item('Tokens analysed', fmtInt(S.tokens_analyzed));
    item('Live / dead', fmtInt(live) + ' / ' + fmtInt(S.features.length - live));
    item('Contexts', 'top ' + S.top_k + ', ' + S.context_before + ' before + ' + S.context_after + ' after');
    item('Tokenizer', S.tokenizer === null ? 'none: tokens shown as ids' : String(S.tokenizer));
    if (S.tokenizer === null) {
      message('This model has no tokenizer: contexts and logit tables show token ids, not text.', 'note');
    }
  }

  function axisText(x, y, text, anchor, cls) {
    return sv('text', { x: x, y: y, 'text-anchor': anchor || 'middle', 'class': cls || 'axis' }, [text]);
  }

  // A bar chart of counts over [edges[k], edges[k+1]), plus an optional separate bar on the left
  // (the dead features). Returns the <svg>.
  function barChart(opts) {
    var W = opts.width || 620, H = opts.height || 190;
    var ml = 46, mr = 24, mt = 14, mb = 38;
    var edges = opts.edges || [], counts = opts.counts || [];
    var extra = opts.extra;                                 // {count, label, title, onclick}
    var slot = extra ? 34 : 0, gap = extra ? 22 : 0;
    var x0 = ml + slot + gap, x1 = W - mr, y0 = H - mb, y1 = mt;
    var top = Math.max.apply(null, counts.concat(extra ? [extra.count] : []).concat([1]));
    var step = niceStep(top / 4, true), ticks = Math.ceil(top / step), ymax = step * ticks;
    var svg = sv('svg', { viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, 'class': 'chart', role: 'img',
                          'aria-label': opts.label || 'histogram' });
    var yOf = function (c) { return y0 - (y0 - y1) * c / ymax; };
    for (var t = 0; t <= ticks; t++) {
      var c = step * t, yy = yOf(c);
      svg.appendChild(sv('line', { x1: ml - 4, x2: x1, y1: yy, y2: yy, 'class': t ? 'grid' : 'base' }));
      svg.appendChild(axisText(ml - 7, yy + 4, fmtCount(c), 'end'));
    }
    if (edges.length >= 2) {
      var lo = edges[0], hi = edges[edges.length - 1], span = hi - lo || 1;
      var xOf = function (v) { return x0 + (x1 - x0) * (v - lo) / span; };
      counts.forEach(function (cnt, k) {
        if (k + 1 >= edges.length) return;
        var xa = xOf(edges[k]), xb = xOf(edges[k + 1]);
        var r = sv('rect', { x: xa + 0.5, y: yOf(cnt), width: Math.max(xb - xa - 1, 0.5), height: y0 - yOf(cnt),
                             'class': 'bar' + (opts.onbar ? ' clickable' : ''), 'data-lo': edges[k], 'data-hi': edges[k + 1] },
                   [sv('title', {}, [opts.barTitle(edges[k], edges[k + 1], cnt)])]);
        if (opts.onbar) r.addEventListener('click', function () { opts.onbar(edges[k], edges[k + 1]); });
        svg.appendChild(r);
      });
      opts.ticks(lo, hi).forEach(function (v) {
        var xx = xOf(v);
        svg.appendChild(sv('line', { x1: xx, x2: xx, y1: y0, y2: y0 + 4, 'class': 'base' }));
        svg.appendChild(axisText(xx, y0 + 16, opts.tickText(v)));
      });
    }
    if (extra) {
      var xa = ml + 4, yb = yOf(extra.count);
      var r = sv('rect', { x: xa, y: yb, width: slot - 8, height: y0 - yb, 'class': 'bar dead' + (extra.onclick ? ' clickable' : '') },
                 [sv('title', {}, [extra.title])]);
      if (extra.onclick) r.addEventListener('click', extra.onclick);
      svg.appendChild(r);
      svg.appendChild(axisText(xa + (slot - 8) / 2, y0 + 16, extra.label, 'middle', 'axis dead-label'));
      svg.appendChild(axisText(xa + (slot - 8) / 2, Math.max(yb - 4, 10), fmtCount(extra.count), 'middle', 'axis count'));
      var xg = ml + slot + gap / 2;                       // the axis break between the two parts
      svg.appendChild(sv('path', { d: 'M' + (xg - 5) + ',' + (y0 + 5) + 'l4,-10M' + (xg + 1) + ',' + (y0 + 5) + 'l4,-10', 'class': 'break' }));
    }
    if (opts.xlabel) svg.appendChild(axisText((x0 + x1) / 2, H - 4, opts.xlabel, 'middle', 'axis title'));
    return svg;
  }

  // The 1, 2 or 5 times a power of ten at or above x; at least 1 for whole counts on a y axis.
  function niceStep(x, whole) {
    if (whole && !(x > 1)) return 1;
    if (!(x > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(x))), m = x / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // About four round values in [lo, hi] for an x axis.
  function niceTicks(lo, hi) {
    var step = niceStep((hi - lo) / 4), t = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push(+v.toPrecision(12));
    return t;
  }

  function fmtCount(c) { return c >= 1e4 ? (c / 1000).toFixed(0) + 'k' : c >= 10 ? Math.round(c) : String(+c.toFixed(1)); }

  function drawDensity() {
    var fig = $('density'), h = S.density_histogram;
    if (!h || !Array.isArray(h.log10_edges) || !Array.isArray(h.counts)) {
      fig.appendChild(el('p', { 'class': 'note', text: 'No density histogram in this report.' }));
      return;
    }
    fig.appendChild(barChart({
      width: 660, height: 200, edges: h.log10_edges, counts: h.counts, label: 'feature density histogram',
      xlabel: 'log10 feature density',
      barTitle: function (a, b, c) { return fmtInt(c) + ' features with density in [1e' + fmt(a) + ', 1e' + fmt(b) + ')'; },
      ticks: function (lo, hi) { var t = []; for (var v = Math.ceil(lo); v <= Math.floor(hi); v++) t.push(v); return t; },
      tickText: function (v) { return v === 0 ? '1' : '1e' + v; },
      onbar: function (a, b) { setFilter(Math.pow(10, a), Math.pow(10, b)); },
      extra: { count: h.dead || 0, label: 'dead',
               title: fmtInt(h.dead || 0) + ' dead features (never fired in ' + fmtInt(S.tokens_analyzed) +
                      ' tokens), drawn at log10 density ' + fmt(h.dead_bin_log10),
               onclick: function () { setFilter(null, 0, true); } }
    }));
  }

  function drawSparsity() {
    var ns = S.neuron_sparsity, fig = $('sparsity');
    if (!ns) return;
    fig.hidden = false;
    var parts = [['one_sparse', '1-sparse', 'one'], ['ten_sparse', '10-sparse', 'ten'], ['dense', 'dense', 'dense']];
    var total = parts.reduce(function (a, p) { return a + (+ns[p[0]] || 0); }, 0) || 1;
    var bar = el('div', { 'class': 'stack' });
    var legend = el('ul', { 'class': 'legend' });
    parts.forEach(function (p) {
      var n = +ns[p[0]] || 0, pct = 100 * n / total;
      bar.appendChild(el('span', { 'class': 'seg ' + p[2], style: 'width:' + pct.toFixed(3) + '%', title: p[1] + ': ' + fmtInt(n) }));
      legend.appendChild(el('li', {}, [el('span', { 'class': 'swatch ' + p[2] }), el('b', { text: p[1] }),
        ' ' + fmtInt(n) + ' (' + pct.toFixed(1) + ' %)']));
    });
    fig.appendChild(bar);
    fig.appendChild(legend);
    fig.appendChild(el('p', { 'class': 'hint', text: 'How many MLP neurons carry each feature\'s decoder direction: one, about ten, or many.' }));
  }

  // The seed's rare direction: how aligned the rare features' encoder columns are with their mean.
  function drawRare() {
    var r = S.rare_direction, fig = $('rare');
    if (!r || !Array.isArray(r.cos_edges) || !Array.isArray(r.cos_counts)) return;
    fig.hidden = false;
    fig.appendChild(el('p', { 'class': 'hint', text: fmtInt(r.n_rare) + ' live features fire on fewer than ' + fmt(r.threshold) +
      ' of tokens; cosine of each one\'s encoder column with their normalised mean direction:' }));
    fig.appendChild(barChart({
      width: 440, height: 170, edges: r.cos_edges, counts: r.cos_counts, label: 'rare-direction cosines', xlabel: 'cosine',
      barTitle: function (a, b, c) { return fmtInt(c) + ' rare features with cosine in [' + fmt(a) + ', ' + fmt(b) + ')'; },
      ticks: niceTicks,
      tickText: fmt }));
  }

  // ---- the feature table: sorted and filtered index arrays, only the rows in view drawn ----

  function setupTable() {
    var head = document.querySelectorAll('#features th');
    Array.prototype.forEach.call(head, function (th) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(th.dataset.key); });
      th.addEventListener('keydown', function (ev) { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); sortBy(th.dataset.key); } });
    });
    ['filter-text', 'filter-min', 'filter-max'].forEach(function (id) { $(id).addEventListener('input', applyFilters); });
    $('filter-dead').addEventListener('change', applyFilters);
    $('filter-reset').addEventListener('click', function () { setFilter(null, null, false, ''); });
    $('filters').addEventListener('submit', function (ev) { ev.preventDefault(); });
    var pending = false;
    $('table-scroll').addEventListener('scroll', function () {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () { pending = false; drawRows(); });
    });
    window.addEventListener('resize', drawRows);
    sortBy('i', 1);
  }

  function setFilter(min, max, showDead, text) {
    $('filter-min').value = min === null || min === undefined ? '' : +min.toPrecision(3);
    $('filter-max').value = max === null || max === undefined ? '' : +max.toPrecision(3);
    $('filter-dead').checked = !showDead;
    if (text !== undefined) $('filter-text').value = text;
    applyFilters();
    $('table-section').scrollIntoView({ block: 'start' });
  }

  function sortBy(key, dir) {
    if (!F[key]) return;
    sortDir = dir || (key === sortKey ? -sortDir : (key === 'i' || key === 'top' ? 1 : -1));
    sortKey = key;
    var t0 = performance.now(), col = F[key], d = sortDir, id = key + ' ' + d;
    if (!sorted[id]) {
      // Ties in feature order: positions in S.features, which lists the features by index.
      var arr = order.slice();
      if (key === 'top') arr.sort(function (a, b) { var x = col[a], y = col[b]; return x < y ? -d : x > y ? d : a - b; });
      else if (d > 0) arr.sort(function (a, b) { return col[a] - col[b] || a - b; });
      else arr.sort(function (a, b) { return col[b] - col[a] || a - b; });
      sorted[id] = arr;
    }
    order = sorted[id];
    Array.prototype.forEach.call(document.querySelectorAll('#features th'), function (th) {
      th.setAttribute('aria-sort', th.dataset.key === key ? (d > 0 ? 'ascending' : 'descending') : 'none');
    });
    applyFilters();
    timing.sort_ms = performance.now() - t0;
  }

  function parseNum(id) {
    var v = $(id).value.trim();
    if (v === '') return null;
    var x = v.slice(-1) === '%' ? parseFloat(v) / 100 : Number(v);
    $(id).classList.toggle('bad', !isFinite(x));
    return isFinite(x) ? x : null;
  }

  function applyFilters() {
    var text = $('filter-text').value.trim().toLowerCase();
    var lo = parseNum('filter-min'), hi = parseNum('filter-max'), hideDead = $('filter-dead').checked;
    var asIndex = /^#?\d+$/.test(text) ? +text.replace('#', '') : -1;
    if (text[0] === '#' && asIndex >= 0) text = '';          // "#12": feature 12 only
    var out = [];
    for (var r = 0; r < order.length; r++) {
      var k = order[r], d = F.density[k];
      if (hideDead && !(d > 0)) continue;
      if (lo !== null && d < lo) continue;
      if (hi !== null && d > hi) continue;
      if (asIndex >= 0 && !text && F.i[k] !== asIndex) continue;
      if (text && F.search[k].indexOf(text) < 0 && F.i[k] !== asIndex) continue;
      out.push(k);
    }
    rows = out;
    var live = nLive(), n = S.features.length;
    $('features').dataset.rows = String(rows.length);
    $('count').textContent = fmtInt(rows.length) + ' of ' + fmtInt(n) + ' features shown' +
      (hideDead && n > live ? ' · ' + fmtInt(n - live) + ' dead hidden' : '');
    $('table-scroll').scrollTop = 0;
    markDensityBars(lo, hi, hideDead);
    drawRows();
  }

  // The density bars inside the table's density range are drawn as selected (1 % slack for the
  // rounded figures a bar click writes into the inputs).
  function markDensityBars(lo, hi, hideDead) {
    Array.prototype.forEach.call(document.querySelectorAll('#density rect.bar'), function (r) {
      var on;
      if (r.classList.contains('dead')) on = !hideDead && hi !== null && hi <= 0;
      else on = (lo !== null || hi !== null) && (lo === null || Math.pow(10, +r.dataset.lo) >= lo * 0.99) &&
                (hi === null || Math.pow(10, +r.dataset.hi) <= hi * 1.01);
      r.classList.toggle('sel', on);
    });
  }

  function drawRows() {
    var box = $('table-scroll'), body = $('features').tBodies[0];
    if (!F || box.offsetParent === null) return;
    var headH = $('features').tHead.offsetHeight;
    var first = Math.max(0, Math.floor((box.scrollTop - headH) / ROW_H) - OVERSCAN);
    var last = Math.min(rows.length, first + Math.ceil(box.clientHeight / ROW_H) + 2 * OVERSCAN);
    var frag = document.createDocumentFragment();
    frag.appendChild(el('tr', { 'class': 'spacer', style: 'height:' + first * ROW_H + 'px' }));
    for (var r = first; r < last; r++) frag.appendChild(rowFor(rows[r]));
    frag.appendChild(el('tr', { 'class': 'spacer', style: 'height:' + (rows.length - last) * ROW_H + 'px' }));
    if (!rows.length) {
      frag.appendChild(el('tr', { 'class': 'empty' }, [el('td', { colspan: 5, text: 'No feature matches the filters.' })]));
    }
    clear(body).appendChild(frag);
  }

  function rowFor(k) {
    var f = S.features[k], dead = !(F.density[k] > 0);
    var top = el('td', { 'class': 'top' }, (f.top_logits || []).map(function (t) { return tokenSpan(topStr(t), 'pill'); }));
    var dens = el('td', { 'class': 'num' }, [
      el('span', { 'class': 'dbar', style: 'width:' + densityWidth(F.density[k]) + 'px' }),
      dead ? el('span', { 'class': 'dead-tag', text: 'dead' }) : fmtDensity(F.density[k])]);
    var tr = el('tr', { 'class': dead ? 'dead' : null, 'data-feature': f.i, onclick: function (ev) {
      if (ev.target.tagName !== 'A') location.hash = 'f=' + f.i;
    } }, [
      el('td', {}, [el('a', { href: '#f=' + f.i, text: '#' + f.i })]), dens,
      el('td', { 'class': 'num', text: fmt(F.max_act[k]) }), el('td', { 'class': 'num', text: fmt(F.mean_act[k]) }), top]);
    return tr;
  }

  // A small bar behind the density figure: log10 density from 1e-7 (nothing) to 1 (full).
  function densityWidth(d) { return d > 0 ? Math.max(1, Math.min(48, 48 * (7 + Math.log10(d)) / 7)) : 0; }

  // ---- shards ----

  function shard(n, obj) {
    if (!obj || !Array.isArray(obj.features)) { shardErr[n] = 'shard ' + n + ' holds no "features"'; return; }
    var key = S && typeof obj.first === 'number' ? Math.floor(obj.first / S.shard_size) : n;
    obj.at = {};
    obj.features.forEach(function (f) { obj.at[f.i] = f; });
    shards[key] = obj;
    settle(key);
  }

  function settle(n) {
    var waiting = shardWait[n] || [];
    shardWait[n] = [];
    waiting.forEach(function (cb) { cb(shards[n] ? null : shardErr[n], shards[n]); });
  }

  function loadShard(n, cb) {
    if (shards[n] || shardErr[n]) { cb(shards[n] ? null : shardErr[n], shards[n]); return; }
    (shardWait[n] = shardWait[n] || []).push(cb);
    if (shardTag[n]) return;
    var name = 'data/shard_' + pad4(n) + '.js';
    var s = el('script', { src: name, charset: 'utf-8' });
    s.async = true;
    s.addEventListener('load', function () {
      if (!shards[n]) {
        shardErr[n] = shardErr[n] || name + ' loaded but did not call saefwReport.shard(' + n + ', ...)';
        settle(n);
      }
    });
    s.addEventListener('error', function () {
      shardErr[n] = 'The data file ' + name + ' is missing or unreadable: the report folder is incomplete ' +
                    '(write it again with `saefw features ... --out DIR`).';
      settle(n);
    });
    shardTag[n] = s;
    document.head.appendChild(s);
  }

  // ---- routing: #f=N shows feature N, anything else the index ----

  function route() {
    var m = /^#f=(\d+)$/.exec(location.hash);
    if (m) showFeature(+m[1]); else showIndex();
  }

  function showIndex() {
    var was = document.body.dataset.view;
    document.body.dataset.view = 'index';
    $('feature-view').hidden = true;
    $('index-view').hidden = false;
    document.title = 'saefw feature report';
    drawRows();
    if (was === 'feature') window.scrollTo(0, indexScrollY);
  }

  function showFeature(i) {
    if (document.body.dataset.view === 'index') indexScrollY = window.scrollY;
    document.body.dataset.view = 'feature';
    $('index-view').hidden = true;
    var view = clear($('feature-view'));
    view.hidden = false;
    view.dataset.feature = String(i);
    view.dataset.state = 'loading';
    document.title = 'Feature ' + i + ' · saefw feature report';
    window.scrollTo(0, 0);
    var n = S.features.length;
    view.appendChild(featureNav(i, n));
    if (!(i in F.at)) {
      view.appendChild(el('p', { 'class': 'error-box', text: 'There is no feature ' + i + ': this SAE has ' + fmtInt(n) + ' features (0 to ' + (n - 1) + ').' }));
      view.dataset.state = 'error';
      return;
    }
    var sh = Math.floor(i / S.shard_size);
    var note = view.appendChild(el('p', { 'class': 'note', text: 'Loading data/shard_' + pad4(sh) + '.js…' }));
    loadShard(sh, function (err, obj) {
      if (note.parentNode !== view) return;      // the reader moved on: this view was drawn anew since
      view.removeChild(note);
      var f = err ? null : obj.at[i];
      if (!f) {
        view.appendChild(el('h2', { text: 'Feature #' + i }));
        view.appendChild(el('p', { 'class': 'error-box', text: err || 'data/shard_' + pad4(sh) + '.js has no entry for feature ' + i + '.' }));
        view.dataset.state = 'error';
        return;
      }
      try {
        drawFeature(view, f);
        view.dataset.state = 'ready';
      } catch (e) {
        view.appendChild(el('p', { 'class': 'error-box', text: 'Could not draw feature ' + i + ': ' + e.message }));
        view.dataset.state = 'error';
        throw e;
      }
    });
  }

  function featureNav(i, n) {
    return el('nav', { 'class': 'fnav' }, [
      el('a', { href: '#', text: '← All features' }),
      i > 0 ? el('a', { href: '#f=' + (i - 1), text: '‹ #' + (i - 1) }) : null,
      i + 1 < n ? el('a', { href: '#f=' + (i + 1), text: '#' + (i + 1) + ' ›' }) : null,
      el('span', { 'class': 'hint', text: 'keys: ← → previous/next, Esc back' })]);
  }

  function onKey(ev) {
    if (document.body.dataset.view !== 'feature' || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) return;
    var i = +$('feature-view').dataset.feature;
    if (ev.key === 'ArrowLeft' && i > 0) location.hash = 'f=' + (i - 1);
    else if (ev.key === 'ArrowRight' && i + 1 < S.features.length) location.hash = 'f=' + (i + 1);
    else if (ev.key === 'Escape') location.hash = '';
  }

  // ---- one feature ----

  function drawFeature(view, f) {
    var live = f.density > 0 && f.examples && f.examples.length;
    view.appendChild(el('h2', {}, ['Feature #' + f.i, f.density > 0 ? null : el('span', { 'class': 'dead-tag big', text: 'dead' })]));
    var stats = el('dl', { 'class': 'stats' });
    var stat = function (k, v) { stats.appendChild(el('div', {}, [el('dt', { text: k }), el('dd', { text: v })])); };
    stat('Density', f.density > 0 ? fmtDensity(f.density) + ' (' + fmt(100 * f.density) + ' % of tokens)' : '0: never fired');
    stat('Max activation', fmt(f.max_act));
    /* mean_act is over all analysed tokens (docs/features.md); divided by the density, over those it fires on */
    stat('Mean activation', fmt(f.mean_act) + ' over all tokens' +
      (f.density > 0 ? ', ' + fmt(f.mean_act / f.density) + ' when firing' : ''));
    view.appendChild(stats);

    var grid = el('div', { 'class': 'grid' });
    var hist = el('section', { 'class': 'card' }, [el('h3', { text: 'Activation histogram' })]);
    var h = f.act_hist || {};
    if (Array.isArray(h.edges) && h.edges.length >= 2 && Array.isArray(h.counts) && h.counts.some(function (c) { return c > 0; })) {
      hist.appendChild(barChart({
        width: 440, height: 180, edges: h.edges, counts: h.counts, label: 'activation histogram', xlabel: 'activation (nonzero only)',
        barTitle: function (a, b, c) { return fmtInt(c) + ' activations in [' + fmt(a) + ', ' + fmt(b) + ')'; },
        ticks: niceTicks,
        tickText: fmt }));
    } else {
      hist.appendChild(el('p', { 'class': 'note', text: 'No nonzero activations.' }));
    }
    grid.appendChild(hist);
    grid.appendChild(logitCard('Promoted next tokens', f.top_logits, 'up'));
    grid.appendChild(logitCard('Suppressed next tokens', f.bottom_logits, 'down'));
    view.appendChild(grid);

    var top = el('section', { 'class': 'card contexts' }, [el('h3', {}, ['Top activations ',
      el('span', { 'class': 'hint', text: 'colour ∝ activation / max activation; the boxed token is the example\'s max; hover a token for its value' })])]);
    if (live) top.appendChild(examplesList(f.examples, f.max_act, 'examples top'));
    else top.appendChild(el('p', { 'class': 'note', text: 'This feature never fired in the ' + fmtInt(S.tokens_analyzed) + ' tokens analysed: no contexts.' }));
    view.appendChild(top);

    (f.quantiles || []).forEach(function (q) {
      if (!q.examples || !q.examples.length) return;
      var sec = el('section', { 'class': 'card contexts' }, [el('h3', { text: 'Sampled: ' + q.label })]);
      sec.appendChild(examplesList(q.examples, f.max_act, 'examples quantile'));
      view.appendChild(sec);
    });
  }

  function logitCard(title, list, kind) {
    var card = el('section', { 'class': 'card logits ' + kind }, [el('h3', { text: title })]);
    list = Array.isArray(list) ? list : [];
    if (!list.length) { card.appendChild(el('p', { 'class': 'note', text: 'None in this report.' })); return card; }
    var big = list.reduce(function (a, t) { return Math.max(a, Math.abs(+t.value || 0)); }, 0) || 1;
    var table = el('table', { 'class': 'logit-table' });
    list.forEach(function (t) {
      var v = +t.value || 0;
      table.appendChild(el('tr', {}, [
        el('td', { 'class': 'tokcell' }, [tokenSpan(t.str !== undefined ? t.str : t.id, 'pill', { title: 'token id ' + t.id })]),
        el('td', { 'class': 'num' }, [fmt(v)]),
        el('td', { 'class': 'barcell' }, [el('span', { 'class': 'lbar', style: 'width:' + (100 * Math.abs(v) / big).toFixed(1) + '%' })])]));
    });
    card.appendChild(table);
    return card;
  }

  function examplesList(examples, featMax, cls) {
    var list = el('ol', { 'class': cls });
    var scale = featMax > 0 ? featMax : Math.max.apply(null, examples.map(function (e) { return +e.max || 0; }).concat([1e-30]));
    examples.forEach(function (ex) {
      var toks = ex.tokens || [], acts = ex.acts || [];
      var ctx = el('span', { 'class': 'ctx' });
      toks.forEach(function (t, k) {
        var a = +acts[k] || 0, frac = Math.max(0, Math.min(1, a / scale));
        var isMax = k === ex.pos;
        var span = tokenSpan(t, isMax ? 'max' : null, {
          title: 'activation ' + fmt(a) + (isMax ? ' (this context\'s max)' : '') + '\ntoken: ' + JSON.stringify(String(t)),
          'data-act': a });
        if (frac > 0) span.style.backgroundColor = 'rgba(255, 110, 20, ' + (0.08 + 0.82 * frac).toFixed(3) + ')';
        ctx.appendChild(span);
      });
      list.appendChild(el('li', { 'class': 'ex' }, [el('span', { 'class': 'exmax', text: fmt(+ex.max) }), ctx]));
    });
    return list;
  }

  function missing(name) {
    fail('No report data: ' + name + ' is missing. This folder holds only the viewer; write a report with ' +
         '`saefw features CHECKPOINT --out DIR` and open DIR/index.html.');
  }

  window.saefwReport = { summary: summary, shard: shard, missing: missing, tokenText: tokenText, timing: timing };
})();
