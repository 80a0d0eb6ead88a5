// The launch page, live: follow a starting (or stopping) server through the
// glue's server-sent events and open the server when it is ready.
//
// Every message shown comes from the hub, the git provider or the request:
// it is set with textContent only, never parsed as HTML.
(function () {
  "use strict";

  function data(event) {
    try {
      var parsed = JSON.parse(event.data);
      return parsed && typeof parsed === "object" ? parsed : {};
    } catch (e) {
      return {};
    }
  }

  // "clone 0.1 s, session 0.4 s, ...": where a launch's time went, as its phases were
  // recorded (the events' `phases`, glue.core.contracts.LAUNCH_PHASES), in launch order
  function phasesText(phases) {
    if (!phases || typeof phases !== "object") {
      return "";
    }
    var parts = [];
    Object.keys(phases).forEach(function (name) {
      var seconds = phases[name];
      if (typeof seconds === "number" && isFinite(seconds)) {
        parts.push(name.replace(/_/g, " ") + " " + seconds.toFixed(seconds < 0.1 ? 3 : 1) + " s");
      }
    });
    return parts.join(", ");
  }

  followLaunch();
  waitForImage();

  function followLaunch() {
    var box = document.getElementById("launch");
    if (!box || !box.dataset.events || !window.EventSource) {
      return;
    }
    var bar = document.getElementById("progress");
    var note = document.getElementById("progress-message");
    var log = document.getElementById("log");
    var status = document.getElementById("status");
    var failure = document.getElementById("failure");
    var failureMessage = document.getElementById("failure-message");
    var failureNext = document.getElementById("failure-next");
    var failureLog = document.getElementById("failure-log");
    var form = document.getElementById("launch-form");
    var source = null;
    var finished = false;
    var OPEN_DELAY_MS = 250; // long enough to see 100 %, short enough not to wait

    function setProgress(value) {
      var v = Math.max(0, Math.min(100, Math.round(Number(value) || 0)));
      // never move backwards: the hub replays a spawn's events on a reconnect
      if (bar.hasAttribute("value") && v < bar.value) {
        return;
      }
      bar.value = v;
      bar.setAttribute("aria-valuenow", String(v));
      bar.setAttribute("aria-valuetext", v + " %");
    }

    function setStatus(text) {
      status.textContent = text;
      status.className = "status status-" + text.replace(/[^a-z]+/g, "-");
    }

    function addLog(text) {
      if (typeof text !== "string" || !text) {
        return;
      }
      var item = document.createElement("li");
      item.textContent = text;
      log.appendChild(item);
      log.scrollTop = log.scrollHeight;
      note.textContent = text;
    }

    // Only a path on this origin, or the user's own server on a subdomain of this host
    // (where each user's servers have an origin of their own, <user>.<host>), with the
    // same scheme and port: never follow a redirect target elsewhere.
    function serverUrl(url) {
      if (typeof url !== "string" || /^\/[\/\\]/.test(url) || /[\\\s]/.test(url)) {
        return null;
      }
      var here = window.location;
      var parsed;
      try {
        parsed = new URL(url, here.href);
      } catch (e) {
        return null;
      }
      if (url.charAt(0) === "/") {
        return parsed.origin === here.origin ? parsed.href : null;
      }
      var suffix = "." + here.hostname;
      var subdomain = parsed.hostname.length > suffix.length &&
        parsed.hostname.slice(-suffix.length) === suffix;
      var same = parsed.protocol === here.protocol && parsed.port === here.port;
      return subdomain && same && !parsed.username && !parsed.password ? parsed.href : null;
    }

    function finish() {
      finished = true;
      if (source) {
        source.close();
      }
    }

    function fail(d) {
      finish();
      setStatus("failed");
      box.hidden = true;
      failureMessage.textContent = (typeof d.message === "string" && d.message) || "The launch failed.";
      failureNext.textContent = typeof d.next_step === "string" ? d.next_step : "";
      failureLog.textContent = Array.isArray(d.log) ? d.log.join("\n") : "";
      failure.hidden = false;
      if (form) {
        form.hidden = false;
      }
    }

    function connect() {
      source = new EventSource(box.dataset.events);
      var replayed = 0;

      source.addEventListener("open", function () {
        // a reconnect replays the spawn's events: show each message once
        replayed = log.children.length;
      });

      source.addEventListener("progress", function (event) {
        var d = data(event);
        setProgress(d.progress);
        if (replayed > 0) {
          replayed -= 1;
          return;
        }
        addLog(d.message);
      });

      source.addEventListener("ready", function (event) {
        var d = data(event);
        finish();
        setProgress(100);
        setStatus("running");
        addLog(d.message || "Your server is ready.");
        var took = phasesText(d.phases);
        if (took) {
          addLog("Where the time went: " + took + ".");
        }
        var url = serverUrl(d.url);
        window.setTimeout(function () {
          if (url) {
            window.location.assign(url);
          } else {
            window.location.reload();
          }
        }, OPEN_DELAY_MS);
      });

      source.addEventListener("failed", function (event) {
        fail(data(event));
      });

      source.addEventListener("reload", function () {
        finish();
        window.location.reload();
      });

      source.addEventListener("error", function () {
        if (finished) {
          return;
        }
        if (source.readyState === EventSource.CLOSED) {
          note.textContent = "Lost the connection to the server; reload the page to follow the launch.";
        } else {
          note.textContent = "The connection was interrupted; reconnecting…";
        }
      });
    }

    box.dataset.live = "true";
    setProgress(0);
    connect();
  }

  // While GitLab CI builds the commit's image (`images.whenBuilding: wait`): follow the
  // pipeline through the same event stream, and launch with the commit's image (the
  // form's plain submit) as soon as it exists.
  function waitForImage() {
    var box = document.getElementById("image-wait");
    if (!box || !box.dataset.events || !window.EventSource) {
      return;
    }
    var message = document.getElementById("image-message");
    var form = document.getElementById("launch-form");
    var source = new EventSource(box.dataset.events);

    source.addEventListener("progress", function (event) {
      var text = data(event).message;
      if (typeof text === "string" && text) {
        message.textContent = text;
      }
    });
    source.addEventListener("image", function (event) {
      source.close();
      message.textContent = (data(event).message || "The image is ready.") + " Launching…";
      form.submit();
    });
    source.addEventListener("failed", function () {
      source.close();
      window.location.reload(); // the page says why, and offers the default image
    });
    box.dataset.live = "true";
  }
})();
