// mnist-serve web page: draw or upload a digit, browse the test set, see the model. No dependencies.
"use strict";

(() => {
  const params = new URLSearchParams(window.location.search);
  // Give up on an answer after this long (?timeout_ms=... overrides, for testing a slow server).
  const TIMEOUT_MS = boundedInt(params.get("timeout_ms"), 200, 120000, 15000);
  const EXPLAIN_AFTER_MS = 250;
  // How often the monitoring panel refreshes (?monitor_ms=... overrides, for testing).
  const MONITOR_MS = boundedInt(params.get("monitor_ms"), 200, 600000, 10000);
  const SLOW_MS = 1000; // after this, say we are still waiting
  const QUICK_RECHECK_MS = 15000; // how often a page showing a quick model looks for the full one
  const MAX_UPLOAD_BYTES = 4 * 1024 * 1024;
  const DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

  const $ = (id) => document.getElementById(id);

  function boundedInt(text, low, high, fallback) {
    const value = Number.parseInt(text ?? "", 10);
    return Number.isFinite(value) ? Math.min(high, Math.max(low, value)) : fallback;
  }

  function percent(p, digits = 1) {
    const top = 100 - 10 ** -digits; // never round 99.96 % up to a certain-looking 100.0 %
    return p < 1 && p * 100 > top ? `>${top.toFixed(digits)} %` : `${(p * 100).toFixed(digits)} %`;
  }

  // ---- Talking to the API -------------------------------------------------------------------

  /** An error to show a person as it is; `status` is the HTTP status, 0 when there was no answer. */
  class ShownError extends Error {
    constructor(message, status = 0) {
      super(message);
      this.status = status;
    }
  }

  const isSuperseded = (err) => err?.name === "AbortError" && !(err instanceof ShownError);

  /**
   * fetch with a timeout and an optional caller's signal (aborted when a newer request replaces
   * this one). Resolves to JSON or a Blob; rejects with ShownError for anything a person should
   * read, or with the AbortError when the caller aborted.
   */
  async function api(url, { method = "GET", body, json, signal, as = "json", timeout = TIMEOUT_MS } = {}) {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeout);
    const forward = () => controller.abort();
    if (signal?.aborted) controller.abort();
    signal?.addEventListener("abort", forward, { once: true });
    try {
      const accept = { json: "application/json", blob: "image/png", text: "text/plain" }[as];
      const headers = { Accept: accept, ...(json === undefined ? {} : { "Content-Type": "application/json" }) };
      const response = await fetch(url, {
        method,
        body: json === undefined ? body : JSON.stringify(json),
        signal: controller.signal,
        headers,
      });
      if (!response.ok) {
        let detail = "";
        try {
          detail = (await response.json()).detail ?? "";
        } catch {
          // not JSON: the status alone will do
        }
        const text = detail ? `: ${detail}` : "";
        throw new ShownError(`The server answered ${response.status}${text}. Please try again.`, response.status);
      }
      if (as === "blob") return await response.blob();
      return as === "text" ? await response.text() : await response.json();
    } catch (err) {
      if (timedOut) {
        throw new ShownError(
          `No answer after ${(timeout / 1000).toFixed(1)} s; the server may be busy. Please try again.`,
        );
      }
      if (err instanceof ShownError || isSuperseded(err)) throw err;
      throw new ShownError("Cannot reach the server. Check the connection and try again.");
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", forward);
    }
  }

  /** A status line that says "working…" only if the answer is slow, and shows errors. */
  function statusLine(element) {
    let slowTimer = 0;
    return {
      busy(text = "Still working…") {
        clearTimeout(slowTimer);
        slowTimer = setTimeout(() => this.show(text, "busy"), SLOW_MS);
      },
      show(text, kind = "") {
        clearTimeout(slowTimer);
        element.textContent = text;
        element.className = `status ${kind}`.trim();
      },
      clear() {
        this.show("");
      },
    };
  }

  // ---- Probability bars ---------------------------------------------------------------------

  function buildBars(list) {
    list.replaceChildren(
      ...DIGITS.map((digit) => {
        const item = document.createElement("li");
        item.innerHTML =
          '<span class="bar-value" aria-hidden="true"></span>' +
          '<span class="bar-track"><span class="bar-fill"></span></span>' +
          `<span class="bar-digit" aria-hidden="true">${digit}</span>`;
        return item;
      }),
    );
  }

  function setBars(list, probabilities) {
    const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
    [...list.children].forEach((item, digit) => {
      const p = probabilities ? probabilities[digit] : 0;
      item.querySelector(".bar-fill").style.height = `${(p * 100).toFixed(2)}%`;
      // Only the values worth reading; the exact ones are in each bar's label.
      item.querySelector(".bar-value").textContent = p >= 0.005 ? `${Math.round(p * 100)}%` : "";
      item.classList.toggle("best", digit === best);
      item.setAttribute("aria-label", `digit ${digit}: ${percent(p)}`);
    });
  }

  // ---- Drawing pad --------------------------------------------------------------------------

  const pad = $("pad");
  const ink = pad.getContext("2d");
  const BRUSH = pad.width / 14;
  let strokes = 0;
  let activePointer = null;
  let last = null;

  function resetPad() {
    ink.fillStyle = "#000";
    ink.fillRect(0, 0, pad.width, pad.height);
    strokes = 0;
    pad.dataset.strokes = "0";
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function dot(point) {
    ink.fillStyle = "#fff";
    ink.beginPath();
    ink.arc(point.x, point.y, BRUSH / 2, 0, 2 * Math.PI);
    ink.fill();
  }

  function line(from, to) {
    ink.strokeStyle = "#fff";
    ink.lineWidth = BRUSH;
    ink.lineCap = "round";
    ink.lineJoin = "round";
    ink.beginPath();
    ink.moveTo(from.x, from.y);
    ink.lineTo(to.x, to.y);
    ink.stroke();
  }

  pad.addEventListener("pointerdown", (event) => {
    if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    activePointer = event.pointerId;
    try {
      pad.setPointerCapture(event.pointerId);
    } catch {
      // a synthetic pointer cannot be captured; drawing still works inside the pad
    }
    hideUploadPreview();
    last = padPoint(event);
    dot(last);
  });

  pad.addEventListener("pointermove", (event) => {
    if (event.pointerId !== activePointer) return;
    event.preventDefault();
    const coalesced = event.getCoalescedEvents?.() ?? [];
    for (const sample of coalesced.length ? coalesced : [event]) {
      const point = padPoint(sample);
      line(last, point);
      last = point;
    }
  });

  function endStroke(event) {
    if (event.pointerId !== activePointer) return;
    activePointer = null;
    strokes += 1;
    pad.dataset.strokes = String(strokes);
    const count = strokes;
    pad.toBlob((blob) => {
      // Skip it if the pad was cleared meanwhile; a later stroke sends its own picture.
      if (blob && count === strokes) predict(blob, "drawing.png", `strokes:${count}`);
    }, "image/png");
  }

  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    pad.addEventListener(type, endStroke);
  }
  // No scrolling, zooming or context menu while drawing on a touch screen.
  pad.addEventListener("touchstart", (event) => event.preventDefault(), { passive: false });
  pad.addEventListener("contextmenu", (event) => event.preventDefault());

  // ---- Prediction display -------------------------------------------------------------------

  const result = $("result");
  const prediction = $("prediction");
  const confidence = $("confidence");
  const seenFigure = $("seen-figure");
  const seen = $("seen");
  const whyFigure = $("why-figure");
  const why = $("why");
  const whyCaption = $("why-caption");
  const steps = $("steps");
  const bars = $("bars");
  const drawStatus = statusLine($("draw-status"));
  let predictController = null;

  function resetResult() {
    predictController?.abort();
    result.dataset.state = "idle";
    prediction.textContent = "?";
    prediction.dataset.source = "";
    confidence.textContent = "Draw or upload a digit.";
    seenFigure.hidden = true;
    whyFigure.hidden = true;
    steps.textContent = "";
    setBars(bars, null);
    drawStatus.clear();
    showFeedback(null);
  }

  async function predict(blob, fileName, source) {
    predictController?.abort();
    const controller = new AbortController();
    predictController = controller;
    result.dataset.state = "pending";
    result.classList.add("pending");
    drawStatus.busy("Asking the network…");
    const form = new FormData();
    form.append("file", blob, fileName);
    try {
      const picked = $("version-pick").value;
      const answer = await api(`/predict?include_image=true${picked ? `&version=${picked}` : ""}`, {
        method: "POST",
        body: form,
        signal: controller.signal,
      });
      showPrediction(answer, source);
      drawStatus.clear();
      result.dataset.state = "done";
      result.classList.remove("pending");
      // Explain once the drawing rests, not after every stroke: explanations are costly and few.
      await new Promise((resolve) => setTimeout(resolve, EXPLAIN_AFTER_MS));
      if (!controller.signal.aborted) await explain(form, answer, controller);
    } catch (err) {
      if (isSuperseded(err)) return;
      drawStatus.show(err.message, "error");
      result.dataset.state = "error";
    } finally {
      if (predictController === controller) {
        predictController = null;
        result.classList.remove("pending");
      }
    }
  }

  // The heat map comes from a second request, so a busy explainer (503) never costs the answer; it
  // asks the version that answered, and is no second answer (nothing logged, no id).
  async function explain(form, answer, controller) {
    try {
      const version = answer.model ? `?version=${answer.model.version}` : "";
      const found = await api(`/predict/explanation${version}`, {
        method: "POST",
        body: form,
        signal: controller.signal,
      });
      why.src = `data:image/png;base64,${found.overlay_png}`;
      whyCaption.textContent = `why ${found.digit}: red for, blue against (runner-up: ${found.runner_up})`;
      whyFigure.dataset.digit = String(found.digit);
      whyFigure.hidden = false;
    } catch (err) {
      if (isSuperseded(err)) return;
      whyCaption.textContent = `no explanation: ${err.message}`;
      whyFigure.hidden = true;
    }
  }

  function showPrediction(answer, source) {
    prediction.textContent = String(answer.prediction);
    prediction.dataset.source = source;
    const verdict = {
      digit: `It's a ${answer.prediction}: ${percent(answer.calibrated_confidence)} sure.`,
      unsure: `Maybe a ${answer.prediction}, but not sure (${percent(answer.calibrated_confidence)}).`,
      not_a_digit: `This does not look like a digit (the network's best guess: ${answer.prediction}).`,
    };
    confidence.textContent = verdict[answer.verdict] ?? verdict.digit;
    confidence.dataset.verdict = answer.verdict ?? "";
    setBars(bars, answer.probabilities);
    const image = answer.normalisation?.image_png;
    seenFigure.hidden = !image;
    if (image) seen.src = `data:image/png;base64,${image}`;
    const done = answer.normalisation?.steps ?? [];
    steps.textContent = done.length
      ? `Normalised: ${done.map((step) => step.replaceAll("_", " ")).join(" → ")}.`
      : "Used as it is: already a 28×28 MNIST-style image.";
    const answeredBy = $("answered-by");
    answeredBy.hidden = !answer.model;
    answeredBy.textContent = answer.model ? `Answered by model version ${answer.model.version}.` : "";
    showFeedback(answer);
    // A canary's candidate answers some requests: that is no sign the default version changed.
    if (modelVersion !== null && !servedVersions.includes(answer.model?.version)) loadModel();
  }

  $("clear").addEventListener("click", () => {
    resetPad();
    hideUploadPreview();
    resetResult();
  });

  // The server's paths, asked of its OpenAPI schema once: one without a log of answers has no
  // /feedback or /monitoring, and knowing it spares a 404 at every refresh (and a console error).
  let serverPaths = null;
  async function offers(path) {
    serverPaths ??= api("/openapi.json").then(
      (schema) => new Set(Object.keys(schema.paths ?? {})),
      () => null, // no schema to ask: try the route, and fall back on its 404
    );
    return (await serverPaths)?.has(path) ?? true;
  }

  // ---- Feedback on an answer ---------------------------------------------------------------

  const feedback = $("feedback");
  const feedbackStatus = statusLine($("feedback-status"));
  const FEEDBACK_LABELS = [...DIGITS, "not_a_digit"];
  let feedbackFor = null; // the answer the buttons give feedback on

  $("feedback-labels").replaceChildren(
    ...FEEDBACK_LABELS.map((label) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.label = String(label);
      button.textContent = label === "not_a_digit" ? "not a digit" : String(label);
      button.addEventListener("click", () => sendFeedback(label, button));
      return button;
    }),
  );
  $("feedback-right").addEventListener("click", (event) => sendFeedback("right", event.currentTarget));

  /** Offer feedback on this answer, where the server takes it: one without a log of answers still
   * gives ids but has no /feedback. */
  async function showFeedback(answer) {
    feedbackFor = answer?.prediction_id ? answer : null;
    feedback.hidden = true;
    feedback.dataset.state = "idle";
    for (const button of feedback.querySelectorAll("button")) {
      button.disabled = false;
      button.removeAttribute("aria-pressed");
    }
    feedbackStatus.clear();
    if (feedbackFor !== null && (await offers("/feedback")) && feedbackFor === answer) feedback.hidden = false;
  }

  const FEEDBACK_REFUSED = {
    404: "The server no longer knows this answer, so the feedback was not recorded.",
    422: "The server did not accept that label.",
    503: "Feedback cannot be recorded right now; please try again in a moment.",
  };

  async function sendFeedback(choice, button) {
    const answer = feedbackFor;
    if (answer === null) return;
    // "Right" agrees with what the page said: the digit, or that it was not one.
    const said = answer.verdict === "not_a_digit" ? "not_a_digit" : answer.prediction;
    const label = choice === "right" ? said : choice;
    feedback.dataset.state = "sending";
    feedbackStatus.busy("Sending…");
    try {
      const body = { prediction_id: answer.prediction_id, label };
      const recorded = await api("/feedback", { method: "POST", json: body });
      if (feedbackFor !== answer) return; // a newer answer replaced this one meanwhile
      for (const other of feedback.querySelectorAll("button")) other.removeAttribute("aria-pressed");
      button.setAttribute("aria-pressed", "true");
      feedback.dataset.state = "sent";
      const as = recorded.label === "not_a_digit" ? "not a digit" : `a ${recorded.label}`;
      const verdict = recorded.correct ? "the answer was right" : `the answer ${recorded.predicted} was wrong`;
      const again = recorded.created_at !== recorded.updated_at ? " (replacing your earlier feedback)" : "";
      feedbackStatus.show(`Thank you: recorded as ${as}, ${verdict}${again}.`, "ok");
      refreshMonitoring();
    } catch (err) {
      if (feedbackFor !== answer) return;
      feedback.dataset.state = "error";
      feedbackStatus.show(FEEDBACK_REFUSED[err.status] ?? err.message, "error");
    }
  }

  // ---- Upload -------------------------------------------------------------------------------

  const upload = $("upload");
  const uploadFigure = $("upload-figure");
  const uploadPreview = $("upload-preview");
  let previewUrl = null;

  function hideUploadPreview() {
    uploadFigure.hidden = true;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    uploadPreview.removeAttribute("src");
  }

  upload.addEventListener("change", () => {
    const file = upload.files?.[0];
    upload.value = ""; // choosing the same file again fires `change` again
    if (!file) return;
    if (file.size > MAX_UPLOAD_BYTES) {
      drawStatus.show(`That file is ${(file.size / 1048576).toFixed(1)} MiB; the limit is 4 MiB.`, "error");
      return;
    }
    hideUploadPreview();
    previewUrl = URL.createObjectURL(file);
    uploadPreview.src = previewUrl;
    uploadFigure.hidden = false;
    predict(file, file.name || "upload", `upload:${file.name}`);
  });

  // ---- Test-set browser ---------------------------------------------------------------------

  const sample = $("sample");
  const sampleImage = $("sample-image");
  const sampleBars = $("sample-bars");
  const indexInput = $("test-index");
  const testStatus = statusLine($("test-status"));
  let testController = null;
  let sampleUrl = null;

  async function showSample(loadSample) {
    testController?.abort();
    const controller = new AbortController();
    testController = controller;
    sample.dataset.state = "pending";
    sample.classList.add("pending");
    testStatus.busy("Loading the sample…");
    try {
      const found = await loadSample(controller.signal);
      const png = await api(`/test/${found.index}/image?scale=8`, { as: "blob", signal: controller.signal });
      if (sampleUrl) URL.revokeObjectURL(sampleUrl);
      sampleUrl = URL.createObjectURL(png);
      sampleImage.src = sampleUrl;
      sampleImage.alt = `Test image ${found.index}, labelled ${found.label}`;
      sampleImage.hidden = false;
      indexInput.value = String(found.index);
      $("sample-index").textContent = String(found.index);
      const sure = document.createElement("small");
      sure.textContent = ` ${percent(found.confidence)}`;
      $("sample-prediction").replaceChildren(String(found.prediction), sure);
      $("sample-label").textContent = String(found.label);
      const verdict = $("sample-verdict");
      verdict.textContent = found.correct ? "✓ correct" : "✗ wrong";
      verdict.className = found.correct ? "verdict ok" : "verdict bad";
      setBars(sampleBars, found.probabilities);
      sample.dataset.index = String(found.index);
      sample.dataset.state = "done";
      testStatus.clear();
    } catch (err) {
      if (isSuperseded(err)) return;
      sample.dataset.state = "error";
      testStatus.show(err.message, "error");
    } finally {
      if (testController === controller) {
        testController = null;
        sample.classList.remove("pending");
      }
    }
  }

  $("test-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (!indexInput.reportValidity()) return;
    const index = Number.parseInt(indexInput.value, 10);
    showSample((signal) => api(`/test/${index}`, { signal }));
  });

  $("random").addEventListener("click", () => {
    showSample(async (signal) => (await api("/test/random?count=1", { signal })).samples[0]);
  });

  // ---- Model information --------------------------------------------------------------------

  const modelStatus = statusLine($("model-status"));
  const PLOT_TEXT = {
    learning_curves: ["Learning curves", "Loss and accuracy per training epoch"],
    confusion_matrix: ["Confusion matrix", "True digits (rows) against predicted digits (columns) on the test set"],
    reliability_diagram: ["Reliability diagram", "Accuracy against confidence on the test set, before and after temperature scaling"],
    robustness: ["Robustness", "Accuracy on corrupted test digits: MNIST-C's fifteen families and rendered uploads"],
  };
  let modelVersion = null;
  let servedVersions = [];

  /** While a canary runs, the user may pick which version answers (default: the split decides). */
  function showVersionChoice(info) {
    const canary = info.routing?.mode === "canary" ? info.routing.candidate : null;
    servedVersions = [info.metadata.version, ...(canary === null ? [] : [canary])];
    const pick = $("version-pick");
    const kept = pick.value;
    pick.replaceChildren(new Option("automatic", ""));
    for (const version of servedVersions) pick.add(new Option(`version ${version}`, String(version)));
    pick.value = servedVersions.includes(Number(kept)) ? kept : "";
    $("version-choice").hidden = canary === null;
  }

  async function loadModel() {
    modelStatus.busy("Loading the model's details…");
    try {
      const info = await api("/model");
      const meta = info.metadata;
      const evaluation = meta.evaluation;
      modelVersion = meta.version;
      $("model-version").textContent = `${meta.name} v${meta.version}`;
      $("model-preset").textContent = meta.training.preset;
      $("model-accuracy").textContent =
        `${percent(evaluation.accuracy, 2)} (${evaluation.correct.toLocaleString("en")} of ${evaluation.total.toLocaleString("en")})`;
      $("model-created").textContent = new Date(meta.created_at).toLocaleString();
      $("model-robustness").textContent = describeRobustness(meta.robustness);
      const quick = meta.training.quick === true;
      $("model-badge").textContent =
        `${meta.name} v${meta.version} · ${meta.training.preset}${quick ? " (quick)" : ""} · ${percent(evaluation.accuracy, 2)} test accuracy`;
      showQuick(quick, meta.training);
      renderPlots(info.plots ?? {}, meta.version);
      showVersionChoice(info);
      modelStatus.clear();
    } catch (err) {
      $("model-badge").textContent = "model unavailable";
      modelStatus.show(err.message, "error");
    }
  }

  /** A quick first model says so, and the page looks again until the full model replaces it. */
  let quickRecheck = null;
  function showQuick(quick, training) {
    const note = $("model-quick");
    note.hidden = !quick;
    const epochs = training.hyperparameters.epochs;
    note.textContent = quick
      ? `A quick model (${training.train_samples.toLocaleString("en")} images, ${epochs} epoch${epochs === 1 ? "" : "s"}): ` +
        "the full model is training and takes its place as soon as it is published."
      : "";
    clearTimeout(quickRecheck);
    if (quick) quickRecheck = setTimeout(loadModel, QUICK_RECHECK_MS);
  }

  function describeRobustness(robustness) {
    if (!robustness) return "not measured";
    const upload = robustness.families.upload;
    const parts = [`MNIST-C mean ${percent(robustness.mnist_c_mean, 1)}`,
      `worst ${robustness.worst_family.replaceAll("_", " ")} ${percent(robustness.families[robustness.worst_family], 1)}`];
    if (upload !== undefined) parts.push(`uploads ${percent(upload, 1)}`);
    return parts.join(" · ");
  }

  function renderPlots(plots, version) {
    const figures = Object.entries(plots).map(([role, url]) => {
      const [title, description] = PLOT_TEXT[role] ?? [role.replaceAll("_", " "), ""];
      const figure = document.createElement("figure");
      figure.dataset.role = role;
      const link = document.createElement("a");
      link.href = `${url}?v=${version}`;
      link.target = "_blank";
      link.rel = "noopener";
      const image = document.createElement("img");
      image.src = link.href;
      image.alt = `${title} of model version ${version}. ${description}`;
      image.loading = "lazy";
      image.addEventListener("error", () => figure.replaceChildren(`${title}: not available.`));
      link.append(image);
      const caption = document.createElement("figcaption");
      caption.textContent = title;
      figure.append(link, caption);
      return figure;
    });
    $("plots").replaceChildren(...figures);
  }

  // ---- Monitoring ---------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const HISTORY = 30; // refreshes kept for the drift chart
  const SERIES_COLOURS = ["#4338ca", "#0e7490", "#b45309", "#be185d"];
  const monitoringStatus = statusLine($("monitoring-status"));
  const driftHistory = new Map(); // version -> [drift ÷ threshold, ...]
  let monitoringRoute = null; // whether the server has /monitoring; asked of its OpenAPI schema once
  let monitoringBusy = false;

  /** Drift per version from Prometheus's text format: the largest over the workers' samples. */
  function driftFromMetrics(text) {
    const found = new Map();
    const sample = /^(mnist_input_drift(?:_threshold)?)\{([^}]*)\} (\S+)$/gm;
    for (const [, name, labels, value] of text.matchAll(sample)) {
      const version = Number(/version="(\d+)"/.exec(labels)?.[1]);
      if (!Number.isFinite(version)) continue;
      const entry = found.get(version) ?? { version, statistic: null, threshold: null };
      const key = name.endsWith("_threshold") ? "threshold" : "statistic";
      entry[key] = Math.max(entry[key] ?? -Infinity, Number(value));
      found.set(version, entry);
    }
    return [...found.values()]
      .filter((entry) => entry.threshold !== null)
      .map((entry) => ({
        version: entry.version,
        drift: { ...entry, drifting: entry.statistic !== null && entry.statistic > entry.threshold },
      }));
  }

  /** /monitoring's versions; a server without it gives drift alone, from /metrics. */
  async function loadMonitoring() {
    monitoringRoute ??= await offers("/monitoring");
    if (monitoringRoute) {
      try {
        return { source: "monitoring", versions: (await api("/monitoring")).versions };
      } catch (err) {
        if (err.status !== 404) throw err;
        monitoringRoute = false;
      }
    }
    return { source: "metrics", versions: driftFromMetrics(await api("/metrics", { as: "text" })) };
  }

  function cell(text, className = "") {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function describeDrift(drift) {
    if (!drift) return ["no reference", ""];
    if (drift.statistic === null) {
      return [`waiting for ${drift.window ? `${drift.window} inputs` : "a full window of inputs"}`, ""];
    }
    const ratio = drift.statistic / drift.threshold;
    const text = `${drift.statistic.toFixed(2)} / ${drift.threshold.toFixed(2)} (${ratio.toFixed(1)}×)`;
    return [text, drift.drifting ? "drifting" : ""];
  }

  function renderMonitoringTable(versions, source) {
    const rows = versions.map((entry) => {
      const row = document.createElement("tr");
      row.dataset.version = String(entry.version);
      const [drift, driftClass] = describeDrift(entry.drift);
      const known = (value) => (source === "monitoring" ? String(value ?? 0) : "–");
      let accuracy = source === "monitoring" ? "no feedback yet" : "–";
      if (entry.accuracy !== null && entry.accuracy !== undefined) {
        const [low, high] = entry.accuracy_interval ?? [entry.accuracy, entry.accuracy];
        accuracy = `${percent(entry.accuracy)} (${percent(low)}–${percent(high)})`;
      }
      row.append(
        cell(`v${entry.version}`),
        cell(known(entry.answers)),
        cell(known(entry.feedback)),
        cell(accuracy),
        cell(drift, driftClass),
      );
      row.lastChild.dataset.drift = driftClass || "calm";
      return row;
    });
    if (!rows.length) {
      const row = document.createElement("tr");
      row.append(cell("No version reports anything yet."));
      row.firstChild.colSpan = 5;
      rows.push(row);
    }
    $("monitoring-rows").replaceChildren(...rows);
  }

  function svgElement(name, attributes, text) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  const CHART = { width: 360, height: 160, left: 40, right: 10, top: 10, bottom: 24 };
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const plotWidth = CHART.width - CHART.left - CHART.right;

  function drawAccuracyChart(versions, source) {
    const chart = $("accuracy-chart");
    const y = (p) => CHART.top + (1 - p) * plotHeight;
    const parts = [
      svgElement("line", { class: "axis", x1: CHART.left, x2: CHART.left, y1: y(1), y2: y(0) }),
      svgElement("text", { x: CHART.left - 4, y: y(1) + 4, "text-anchor": "end" }, "100%"),
      svgElement("text", { x: CHART.left - 4, y: y(0) + 4, "text-anchor": "end" }, "0%"),
    ];
    const measured = versions.filter((entry) => entry.accuracy !== null && entry.accuracy !== undefined);
    const slot = plotWidth / Math.max(measured.length, 1);
    measured.forEach((entry, index) => {
      const x = CHART.left + index * slot + slot * 0.25;
      const [low, high] = entry.accuracy_interval ?? [entry.accuracy, entry.accuracy];
      const middle = x + slot * 0.25;
      parts.push(
        svgElement("rect", { class: "bar", x, width: slot * 0.5, y: y(entry.accuracy), height: y(0) - y(entry.accuracy) }),
        svgElement("line", { class: "interval", x1: middle, x2: middle, y1: y(high), y2: y(low) }),
        svgElement("text", { x: middle, y: CHART.height - 8, "text-anchor": "middle" }, `v${entry.version}`),
      );
    });
    if (!measured.length) {
      const why = source === "monitoring" ? "no feedback yet" : "no feedback recorded by this server";
      parts.push(svgElement("text", { x: CHART.left + 10, y: y(0.5) }, why));
    }
    chart.replaceChildren(...parts);
  }

  function drawDriftChart() {
    const chart = $("drift-chart");
    const series = [...driftHistory.entries()];
    const ratios = series.flatMap(([, values]) => values.filter((v) => v !== null));
    // Log scale: in distribution the ratio sits near 0.5, a broken input stream at 10 to 1000.
    const top = Math.log10(Math.max(10, ...ratios));
    const bottom = Math.log10(Math.min(0.1, ...ratios.filter((v) => v > 0)));
    const y = (ratio) => CHART.top + ((top - Math.log10(Math.max(ratio, 10 ** bottom))) / (top - bottom)) * plotHeight;
    const x = (index) => CHART.left + (index / (HISTORY - 1)) * plotWidth;
    const parts = [
      svgElement("line", { class: "axis", x1: CHART.left, x2: CHART.left, y1: CHART.top, y2: CHART.top + plotHeight }),
      svgElement("line", { class: "threshold", x1: CHART.left, x2: CHART.width - CHART.right, y1: y(1), y2: y(1) }),
      svgElement("text", { x: CHART.left - 4, y: y(1) + 4, "text-anchor": "end" }, "1×"),
      svgElement("text", { x: CHART.left - 4, y: CHART.top + 8, "text-anchor": "end" }, `${Math.round(10 ** top)}×`),
    ];
    series.forEach(([version, values], index) => {
      const colour = SERIES_COLOURS[index % SERIES_COLOURS.length];
      const offset = HISTORY - values.length;
      const points = values
        .map((ratio, i) => (ratio === null ? null : `${x(offset + i).toFixed(1)},${y(ratio).toFixed(1)}`))
        .filter((point) => point !== null);
      if (points.length) {
        parts.push(svgElement("polyline", { class: "series", stroke: colour, points: points.join(" "), "data-version": version }));
      }
      parts.push(
        svgElement("text", { x: CHART.left + 6 + index * 40, y: CHART.height - 8, fill: colour, style: `fill: ${colour}` }, `v${version}`),
      );
    });
    if (!series.length) parts.push(svgElement("text", { x: CHART.left + 10, y: y(1) - 6 }, "no drift reported"));
    chart.replaceChildren(...parts);
  }

  function recordDrift(versions) {
    const reported = new Set(versions.map((entry) => entry.version));
    for (const version of driftHistory.keys()) if (!reported.has(version)) driftHistory.delete(version);
    for (const entry of versions) {
      if (!entry.drift) continue;
      const { statistic, threshold } = entry.drift;
      const values = driftHistory.get(entry.version) ?? [];
      values.push(statistic === null ? null : statistic / threshold);
      driftHistory.set(entry.version, values.slice(-HISTORY));
    }
  }

  async function refreshMonitoring() {
    if (monitoringBusy) return;
    monitoringBusy = true;
    try {
      const { source, versions } = await loadMonitoring();
      $("monitoring").dataset.source = source;
      renderMonitoringTable(versions, source);
      recordDrift(versions);
      drawAccuracyChart(versions, source);
      drawDriftChart();
      monitoringStatus.show(
        source === "monitoring" ? "" : "This server keeps no log of answers: drift only, from its metrics.",
      );
    } catch (err) {
      if (!isSuperseded(err)) monitoringStatus.show(err.message, "error");
    } finally {
      monitoringBusy = false;
    }
  }

  // ---- Start --------------------------------------------------------------------------------

  buildBars(bars);
  buildBars(sampleBars);
  resetPad();
  resetResult();
  loadModel();
  refreshMonitoring();
  setInterval(refreshMonitoring, MONITOR_MS);
  showSample((signal) => api(`/test/${boundedInt(indexInput.value, 0, 9999, 0)}`, { signal }));
})();
