'use strict';
// The page's side of the echo test: one RTCPeerConnection to the Go side,
// signaled with POST /offer, the Go side's Stats from the /events stream,
// and this browser's getStats beside them. window.demo holds the state the
// page shows, for a test driving the page.

const $ = id => document.getElementById(id);
const demo = window.demo = {status: 'idle', call: null, go: null, browser: null, message: '', restarts: 0};
let pc = null, events = null, mic = null, browserTimer = null;

function setStatus(text, cls) {
  demo.status = text;
  $('status').textContent = text;
  $('status').className = cls || '';
}

function say(text, isError) {
  demo.message = text;
  const m = $('message');
  m.textContent = text;
  m.className = isError ? '' : 'info';
  m.hidden = !text;
}

function buttons(inCall) {
  $('call').disabled = inCall;
  $('restart').disabled = !inCall;
  $('hangup').disabled = !inCall;
}

// postJSON posts body and returns the JSON reply, or throws the server's
// error message.
async function postJSON(url, body) {
  const r = await fetch(url, {method: 'POST', body});
  let data;
  try { data = await r.json(); } catch (e) { data = {error: 'HTTP ' + r.status}; }
  if (!r.ok) throw new Error(data.error || 'HTTP ' + r.status);
  return data;
}

// The Go side takes whole descriptions (no trickle): wait until every
// candidate is in, or 5 s.
function gathered() {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise(resolve => {
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 5000);
  });
}

// negotiate makes an offer, sends it and applies the answer. Within a call
// (a restart) a refused offer is rolled back and the call goes on.
async function negotiate(iceRestart) {
  await pc.setLocalDescription(await pc.createOffer({iceRestart}));
  await gathered();
  const url = demo.call ? '/offer?call=' + encodeURIComponent(demo.call) : '/offer';
  let reply;
  try {
    reply = await postJSON(url, pc.localDescription.sdp);
  } catch (e) {
    if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({type: 'rollback'});
    throw e;
  }
  await pc.setRemoteDescription({type: 'answer', sdp: reply.answer});
  return reply.call;
}

function updateStatus() {
  if (!demo.call) return;
  const browser = pc.connectionState, go = demo.go ? demo.go.state : 'new';
  if (browser === 'connected' && go === 'connected') setStatus('connected', 'connected');
  else if (browser === 'failed' || go === 'failed') setStatus('failed (browser ' + browser + ', Go ' + go + ')', 'failed');
  else setStatus(browser === 'connected' ? 'Go side ' + go : browser, 'busy');
}

async function call() {
  buttons(true);
  say('');
  // The last call's figures are not this one's: the status and a test
  // driving the page read them.
  demo.go = demo.browser = null;
  setStatus('calling', 'busy');
  try {
    try {
      mic = await navigator.mediaDevices.getUserMedia({audio: true});
    } catch (e) {
      mic = null;
      say('No microphone (' + e.name + '): calling without one, so there is only the beep to hear.', true);
    }
    pc = new RTCPeerConnection();
    if (mic) pc.addTrack(mic.getAudioTracks()[0], mic);
    else pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.addEventListener('track', e => { $('remote').srcObject = e.streams[0] || new MediaStream([e.track]); });
    pc.addEventListener('connectionstatechange', updateStatus);
    demo.call = await negotiate(false);
    setStatus('connecting', 'busy');
    events = new EventSource('/events?call=' + encodeURIComponent(demo.call));
    events.addEventListener('stats', e => { demo.go = JSON.parse(e.data); renderGo(); updateStatus(); });
    events.addEventListener('ended', e => end('the Go side ended the call: ' + JSON.parse(e.data).reason, true));
    events.addEventListener('error', () => { if (demo.call) end('lost the connection to the Go side', true); });
    browserTimer = setInterval(() => renderBrowser().catch(e => console.error(e)), 1000);
  } catch (e) {
    end('the call failed: ' + e.message, true);
  }
}

async function restart() {
  $('restart').disabled = true;
  setStatus('restarting ICE', 'busy');
  try {
    pc.restartIce();
    await negotiate(true);
    demo.restarts++;
    say('ICE restarted (restart ' + demo.restarts + '): new credentials, candidates gathered again.', false);
  } catch (e) {
    say('The restart failed: ' + e.message, true);
  } finally {
    if (demo.call) $('restart').disabled = false;
    updateStatus();
  }
}

async function hangup() {
  const id = demo.call;
  if (!id) return;
  try {
    const r = await postJSON('/hangup?call=' + encodeURIComponent(id), '');
    end('ended: ' + r.ended, false);
  } catch (e) {
    end('ended (' + e.message + ')', true);
  }
}

// end tears the call down on this side; the Go side hangs up when the
// event stream closes, if it has not already.
function end(why, isError) {
  if (events) events.close();
  if (browserTimer) clearInterval(browserTimer);
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach(t => t.stop());
  events = browserTimer = pc = mic = null;
  demo.call = null;
  buttons(false);
  setStatus(isError ? 'ended with an error' : 'idle', isError ? 'failed' : '');
  say(why, isError);
}

// rows fills table with [label, value, bad] rows; values are text, never
// markup.
function rows(table, list) {
  table.replaceChildren(...list.map(([label, value, bad]) => {
    const tr = document.createElement('tr');
    if (bad) tr.className = 'bad';
    for (const text of [label, value]) {
      const td = document.createElement('td');
      td.textContent = text === undefined || text === null || text === '' ? '–' : String(text);
      tr.append(td);
    }
    return tr;
  }));
}

const cand = c => c ? c.type + ' ' + c.address + ' (' + c.protocol + ')' : undefined;

function renderGo() {
  const s = demo.go;
  const p = s.path;
  const list = [
    ['state', s.state],
    ['keying', s.keying],
    ['SRTP profile', s.profile],
    ['codec', s.codec],
    ['path', p ? (p.direct ? 'direct' : 'relayed' + (p.relay ? ' via ' + p.relay : '')) : undefined],
    ['local (Go)', cand(p && p.local)],
    ['remote (browser)', cand(p && p.remote)],
    ['path RTT', s.iceRtt],
    ['RTP sent', s.rtpSent],
    ['RTP received, decrypted', s.rtpReceived],
    ['RTCP sent / received', s.rtcpSent + ' / ' + s.rtcpReceived],
    ['auth failures', s.authFailures, s.authFailures > 0],
    ['replays / unknown key / malformed', s.replaysDropped + ' / ' + s.unknownMKIDrops + ' / ' + s.malformed,
      s.replaysDropped + s.unknownMKIDrops + s.malformed > 0],
    ['echo: frames read / echoed', s.framesRead + ' / ' + s.framesEchoed + ' (delay ' + s.echoDelayMs + ' ms)'],
  ];
  // Receive quality appears once the Call's Stats carry it.
  const q = s.quality;
  if (q) {
    list.push(['loss', q.loss], ['jitter', q.jitter], ['RTT (RTCP)', q.rtt], ['MOS', q.mos]);
    if (q.remote) list.push(['browser hears (its reports)', q.remote]);
  }
  $('go-quality-note').hidden = !!q;
  rows($('go'), list);
}

async function renderBrowser() {
  if (!pc) return;
  const byId = new Map();
  (await pc.getStats()).forEach(r => byId.set(r.id, r));
  const b = {connection: pc.connectionState, ice: pc.iceConnectionState, packetsReceived: 0, packetsSent: 0};
  for (const r of byId.values()) {
    if (r.type === 'transport') {
      Object.assign(b, {dtls: r.dtlsState, dtlsCipher: r.dtlsCipher, srtpCipher: r.srtpCipher});
      const pair = byId.get(r.selectedCandidatePairId);
      if (pair) {
        const l = byId.get(pair.localCandidateId), rm = byId.get(pair.remoteCandidateId);
        const c = x => x && x.candidateType + ' ' + x.address + ':' + x.port + ' (' + x.protocol + ')';
        Object.assign(b, {local: c(l), remote: c(rm), rtt: pair.currentRoundTripTime});
      }
    }
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      b.packetsReceived += r.packetsReceived;
      Object.assign(b, {packetsLost: r.packetsLost, jitter: r.jitter});
      const codec = byId.get(r.codecId);
      if (codec) b.codec = codec.mimeType + '/' + codec.clockRate;
    }
    if (r.type === 'outbound-rtp' && r.kind === 'audio') b.packetsSent += r.packetsSent;
  }
  demo.browser = b;
  const ms = x => x === undefined ? undefined : (x * 1000).toFixed(1) + ' ms';
  rows($('browser'), [
    ['connection / ICE', b.connection + ' / ' + b.ice],
    ['DTLS', b.dtls + (b.dtlsCipher ? ', ' + b.dtlsCipher : '')],
    ['SRTP cipher', b.srtpCipher],
    ['codec', b.codec],
    ['local (browser)', b.local],
    ['remote (Go)', b.remote],
    ['ICE RTT', ms(b.rtt)],
    ['RTP sent', b.packetsSent],
    ['RTP received', b.packetsReceived],
    ['packets lost', b.packetsLost],
    ['jitter', ms(b.jitter)],
  ]);
}

$('call').addEventListener('click', call);
$('restart').addEventListener('click', restart);
$('hangup').addEventListener('click', hangup);
