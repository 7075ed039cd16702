// The drawing pad's front end (an anywidget ES module; Python side: drawpad.py).
//
// A square canvas you draw on with a mouse, pen or finger (pointer events), dark ink on white like
// paper. The drawing goes to Python as a PNG data URL in the `drawing` trait, throttled while a stroke
// is drawn and once more when it ends; Python answers in `result` with the 28x28 image the network saw
// and its top digits, which are drawn here. Every request carries a sequence number, and the root
// element's data-sent / data-shown attributes tell a test (or a curious reader) when the answer shown
// belongs to the last drawing sent.

function render({ model, el }) {
  const size = model.get("size");
  const root = document.createElement("div");
  root.className = "mnist-drawpad";
  root.dataset.sent = "0";
  root.dataset.shown = "0";
  root.innerHTML = `
    <style>
      .mnist-drawpad { display: flex; gap: 20px; align-items: flex-start; font-family: var(--jp-ui-font-family, sans-serif);
                       font-size: 13px; color: var(--jp-ui-font-color1, #222); padding: 4px; }
      .mnist-drawpad .pad-column { display: flex; flex-direction: column; gap: 6px; }
      .mnist-drawpad canvas.pad { border: 1px solid #888; border-radius: 4px; background: #fff; cursor: crosshair;
                                  touch-action: none; }
      .mnist-drawpad canvas.seen { border: 1px solid #888; image-rendering: pixelated; width: 112px; height: 112px;
                                   background: #000; }
      .mnist-drawpad .answer { font-size: 42px; font-weight: bold; line-height: 1; min-height: 44px; }
      .mnist-drawpad .status { color: var(--jp-ui-font-color2, #666); min-height: 18px; max-width: 260px; }
      .mnist-drawpad .bars { display: flex; flex-direction: column; gap: 4px; width: 220px; }
      .mnist-drawpad .bar-row { display: flex; align-items: center; gap: 6px; }
      .mnist-drawpad .bar-digit { width: 14px; font-weight: bold; text-align: right; }
      .mnist-drawpad .bar-track { flex: 1; height: 14px; background: #e6e6e6; border-radius: 3px; overflow: hidden; }
      .mnist-drawpad .bar-fill { height: 100%; background: steelblue; }
      .mnist-drawpad .bar-value { width: 48px; text-align: right; font-variant-numeric: tabular-nums; }
      .mnist-drawpad .problem { color: #b00020; max-width: 260px; }
      .mnist-drawpad button.clear { align-self: flex-start; padding: 3px 14px; cursor: pointer; }
    </style>
    <div class="pad-column">
      <canvas class="pad" width="${size}" height="${size}" aria-label="drawing pad: draw a digit"></canvas>
      <button class="clear" type="button">Clear</button>
    </div>
    <div class="pad-column">
      <div>network's answer</div>
      <div class="answer"></div>
      <div class="bars"></div>
      <div>what it sees (28x28)</div>
      <canvas class="seen" width="28" height="28"></canvas>
      <div class="status">draw a digit</div>
      <div class="problem" role="alert"></div>
    </div>`;
  el.appendChild(root);

  const pad = root.querySelector("canvas.pad");
  const seen = root.querySelector("canvas.seen");
  const answer = root.querySelector(".answer");
  const bars = root.querySelector(".bars");
  const status = root.querySelector(".status");
  const problem = root.querySelector(".problem");
  const ctx = pad.getContext("2d");
  let seq = 0;
  let drawing = false;
  let inked = false;
  let last = null;
  let lastSent = 0;

  function blank() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, size, size);
    seen.getContext("2d").clearRect(0, 0, 28, 28);
    answer.textContent = "";
    answer.removeAttribute("data-digit");
    bars.innerHTML = "";
  }

  function send(png) {
    seq += 1;
    root.dataset.sent = String(seq);
    model.set("drawing", { seq, png });
    model.save_changes();
    lastSent = performance.now();
  }

  function point(event) {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * (size / box.width), (event.clientY - box.top) * (size / box.height)];
  }

  function line(from, to) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = model.get("stroke_width");
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    drawing = true;
    inked = true;
    last = point(event);
    line(last, last); // a dot, so a tap leaves ink too
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    // Pens and fingers report more points than events; use them all for a smooth line.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const next = point(e);
      line(last, next);
      last = next;
    }
    if (performance.now() - lastSent > model.get("throttle_ms")) send(pad.toDataURL("image/png"));
  });
  function end(event) {
    if (!drawing) return;
    drawing = false;
    if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
    send(pad.toDataURL("image/png"));
  }
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);

  root.querySelector("button.clear").addEventListener("click", () => {
    blank();
    inked = false;
    status.textContent = "draw a digit";
    send("");
  });

  function show() {
    const result = model.get("result") || {};
    const shown = Number(result.seq || 0);
    if (shown < Number(root.dataset.shown)) return; // an older answer overtaken by a newer one
    root.dataset.shown = String(shown);
    bars.innerHTML = "";
    if (!inked || !result.top || !result.top.length) {
      answer.textContent = "";
      answer.removeAttribute("data-digit");
      seen.getContext("2d").clearRect(0, 0, 28, 28);
      status.textContent = result.error || "draw a digit";
      return;
    }
    answer.textContent = String(result.digit);
    answer.dataset.digit = String(result.digit);
    // the same "not a digit?" rule as `python -m mnist_cnn.predict`: the answer stays, with the reason beside it
    status.textContent = result.not_a_digit ? `not a digit? ${result.not_a_digit}` : "";
    root.dataset.notADigit = result.not_a_digit ? "true" : "false";
    for (const { digit, probability } of result.top) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.digit = String(digit);
      row.innerHTML = `<span class="bar-digit">${digit}</span><span class="bar-track"><span class="bar-fill"></span></span>`
        + `<span class="bar-value">${(100 * probability).toFixed(1)}%</span>`;
      row.querySelector(".bar-fill").style.width = `${(100 * probability).toFixed(1)}%`;
      row.querySelector(".bar-fill").style.display = "block";
      bars.appendChild(row);
    }
    const pixels = result.image || [];
    const image = new ImageData(28, 28);
    for (let i = 0; i < 28 * 28; i++) {
      const v = pixels[i] || 0;
      image.data.set([v, v, v, 255], 4 * i);
    }
    seen.getContext("2d").putImageData(image, 0, 0);
  }

  // Python's `error` trait: a message it could not read at all (so no answer carries its sequence number).
  function showError() {
    const text = model.get("error") || "";
    problem.textContent = text;
    root.dataset.error = text;
  }

  blank();
  showError();
  model.on("change:result", show);
  model.on("change:error", showError);
  return () => {
    model.off("change:result", show);
    model.off("change:error", showError);
  };
}

export default { render };
