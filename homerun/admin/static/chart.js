// Time-series charts drawn as plain SVG: time on x, one or more series on y, a legend with
// each series' latest value, and a crosshair that reads every series at the pointer.

const SVG_NS = "http://www.w3.org/2000/svg";
const HEIGHT = 150;
const MARGIN = { top: 10, right: 10, bottom: 22, left: 46 };

export function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

export function html(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// A step of 1, 2 or 5 times a power of ten, so that about `count` steps cover `top`:
// top 83 and 4 steps -> 20 (0, 20, 40, 60, 80, 100).
function niceStep(top, count) {
  const raw = top / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const factor = raw / power;
  return power * (factor <= 1 ? 1 : factor <= 2 ? 2 : factor <= 5 ? 5 : 10);
}

function lastValue(values) {
  for (let index = values.length - 1; index >= 0; index -= 1) {
    if (values[index] != null) return values[index];
  }
  return null;
}

export class Chart {
  // options: title, testid (of the <svg>), legendTestid, format (number -> text), kind ("line" | "bars"), step (draw
  // counts as steps), integer (whole-number ticks), minTop (the y axis reaches at least this).
  constructor(options) {
    this.options = { kind: "line", step: false, minTop: 1, ...options };
    this.data = null;
    this.pointerX = null;

    this.legend = html("ul", { className: "legend", "data-testid": this.options.legendTestid });
    this.svg = svg("svg", {
      class: "plot",
      height: HEIGHT,
      role: "img",
      "aria-label": this.options.title,
      "data-testid": this.options.testid,
    });
    this.tooltip = html("div", { className: "tooltip", hidden: "" });
    this.element = html(
      "figure",
      { className: "chart" },
      html("figcaption", {}, html("span", { className: "chart-title", text: this.options.title }),
        this.legend),
      html("div", { className: "plot-box" }, this.svg, this.tooltip),
    );
    this.svg.addEventListener("pointermove", (event) => {
      this.pointerX = event.clientX - this.svg.getBoundingClientRect().left;
      this.drawCrosshair();
    });
    this.svg.addEventListener("pointerleave", () => {
      this.pointerX = null;
      this.drawCrosshair();
    });
  }

  // data: { t: [epoch seconds], start, end, series: [{ key, label, color, values, dashed }] }
  update(data) {
    this.data = data;
    this.draw();
  }

  draw() {
    const data = this.data;
    if (data == null) return;
    const width = Math.max(this.svg.clientWidth || 0, 240);
    this.svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    this.svg.replaceChildren();
    this.drawLegend();

    const plotWidth = width - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    let top = this.options.minTop;
    for (const series of data.series) {
      for (const value of series.values) if (value != null && value > top) top = value;
    }
    // Counts (instances, requests in flight) get whole-number ticks.
    const step = this.options.integer ? Math.max(1, niceStep(top, 4)) : niceStep(top, 4);
    top = Math.ceil(top / step - 1e-9) * step;
    const span = Math.max(data.end - data.start, 1);
    const x = (time) => MARGIN.left + ((time - data.start) / span) * plotWidth;
    const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;
    this.scale = { x, y, plotWidth, plotHeight, width };

    const axes = svg("g", { class: "axes" });
    for (let value = 0; value <= top + step / 2; value += step) {
      const lineY = y(value).toFixed(1);
      axes.append(svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: lineY, y2: lineY,
        class: value === 0 ? "baseline" : "grid" }));
      const label = svg("text", { x: MARGIN.left - 6, y: lineY, class: "y-label" });
      label.textContent = this.options.format(value);
      axes.append(label);
    }
    for (const tick of timeTicks(span)) {
      const tickX = x(data.end - tick).toFixed(1);
      axes.append(svg("line", { x1: tickX, x2: tickX, y1: MARGIN.top,
        y2: MARGIN.top + plotHeight, class: "grid" }));
      // The oldest and newest labels sit at the plot's edges: align them inwards.
      const anchor = tick === 0 ? "end" : tick >= span - 1e-6 ? "start" : "middle";
      const label = svg("text", { x: tickX, y: HEIGHT - 6, class: "x-label",
        "text-anchor": anchor });
      label.textContent = tick === 0 ? "now" : `-${tick >= 60 ? `${tick / 60}m` : `${tick}s`}`;
      axes.append(label);
    }
    this.svg.append(axes);

    const marks = svg("g", { class: "marks" });
    if (this.options.kind === "bars") this.drawBars(marks, x, y, plotWidth, span);
    else this.drawLines(marks, x, y);
    this.svg.append(marks);

    if (!data.t.length || data.series.length === 0) {
      const empty = svg("text", { x: MARGIN.left + plotWidth / 2, y: MARGIN.top + plotHeight / 2,
        class: "empty" });
      empty.textContent = data.series.length === 0 ? "no instances" : "no samples yet";
      this.svg.append(empty);
    }
    this.crosshair = svg("g", { class: "crosshair" });
    this.svg.append(this.crosshair);
    this.drawCrosshair();
  }

  drawLines(marks, x, y) {
    const { t, start } = this.data;
    for (const series of this.data.series) {
      const group = svg("g", { "data-series": series.key, stroke: series.color,
        fill: series.color, class: series.dashed ? "dashed" : "" });
      let run = [];
      const flush = () => {
        if (run.length === 1) {
          group.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.5 }));
        } else if (run.length > 1) {
          group.append(svg("polyline", { points: run.map((p) => p.join(",")).join(" "),
            fill: "none" }));
        }
        run = [];
      };
      for (let index = 0; index < t.length; index += 1) {
        const value = series.values[index];
        if (value == null || t[index] < start) {
          flush();
          continue;
        }
        const pointX = x(t[index]).toFixed(1);
        const pointY = y(value).toFixed(1);
        // Counts (instances) hold their value until the next sample: draw a step, not a slope.
        if (this.options.step && run.length) run.push([pointX, run[run.length - 1][1]]);
        run.push([pointX, pointY]);
      }
      flush();
      marks.append(group);
    }
  }

  drawBars(marks, x, y, plotWidth, span) {
    const { t, start } = this.data;
    const sampleSeconds = t.length > 1 ? (t[t.length - 1] - t[0]) / (t.length - 1) : 1;
    const barWidth = Math.max(3, (sampleSeconds / span) * plotWidth * 0.8);
    for (const series of this.data.series) {
      const group = svg("g", { "data-series": series.key, fill: series.color });
      for (let index = 0; index < t.length; index += 1) {
        const value = series.values[index];
        if (value == null || value <= 0 || t[index] < start) continue;
        const barTop = y(value);
        group.append(svg("rect", { x: (x(t[index]) - barWidth / 2).toFixed(1),
          y: barTop.toFixed(1), width: barWidth.toFixed(1),
          height: (y(0) - barTop).toFixed(1) }));
      }
      marks.append(group);
    }
  }

  drawLegend() {
    const items = this.data.series.map((series) => {
      const latest = lastValue(series.values);
      return html("li", { title: series.title || series.label },
        html("span", { className: `swatch${series.dashed ? " dashed" : ""}` }),
        html("span", { className: "legend-label", text: series.label }),
        html("span", { className: "legend-value", "data-series": series.key,
          text: latest == null ? "–" : this.options.format(latest) }));
    });
    // The swatch colour comes from the data, set through the CSSOM (allowed by the page's
    // content security policy, which forbids inline style attributes).
    this.data.series.forEach((series, index) => {
      items[index].querySelector(".swatch").style.setProperty("--color", series.color);
    });
    this.legend.replaceChildren(...items);
  }

  drawCrosshair() {
    if (!this.crosshair || !this.data) return;
    this.crosshair.replaceChildren();
    const { t } = this.data;
    const { x, width } = this.scale;
    if (this.pointerX == null || !t.length || this.pointerX < MARGIN.left
        || this.pointerX > width - MARGIN.right) {
      this.tooltip.hidden = true;
      return;
    }
    let nearest = 0;
    for (let index = 1; index < t.length; index += 1) {
      if (Math.abs(x(t[index]) - this.pointerX) < Math.abs(x(t[nearest]) - this.pointerX)) {
        nearest = index;
      }
    }
    const lineX = x(t[nearest]).toFixed(1);
    this.crosshair.append(svg("line", { x1: lineX, x2: lineX, y1: MARGIN.top,
      y2: HEIGHT - MARGIN.bottom }));
    const when = new Date(t[nearest] * 1000).toLocaleTimeString([], { hour12: false });
    const rows = [html("div", { className: "tooltip-time", text: when })];
    for (const series of this.data.series) {
      const value = series.values[nearest];
      rows.push(html("div", {}, html("span", { className: "legend-label", text: series.label }),
        html("span", { className: "legend-value",
          text: value == null ? "–" : this.options.format(value) })));
    }
    this.tooltip.replaceChildren(...rows);
    this.tooltip.hidden = false;
    const flip = Number(lineX) > width / 2;
    this.tooltip.classList.toggle("left", flip);
    this.tooltip.style.setProperty("--x", `${lineX}px`);
  }
}

// Seconds before the newest sample where the time axis gets a tick: 5 minutes -> every
// minute, 1 hour -> every 15 minutes.
function timeTicks(span) {
  const every = span <= 600 ? 60 : span <= 1800 ? 300 : 900;
  const ticks = [];
  for (let ago = 0; ago <= span + 1e-6; ago += every) ticks.push(ago);
  return ticks;
}
