/* The admin's condition and rollout builders (flags/admin/widgets.py).
 *
 * The JSON text box of each field stays the value the form posts: the rows are drawn from
 * it, and every change in the rows writes it again. Text typed in the JSON view is left as
 * typed (and redraws the rows), so what is typed there is what is saved. Whatever the rows
 * cannot show faithfully is left to the JSON view, with a note saying why.
 */
"use strict";

(function () {
  const MAX_ROWS = 100;
  const MAX_VALUES = 200;
  const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$/;
  const KNOWN_CONDITION_KEYS = ["attribute", "operator", "values", "negate"];
  let counter = 0;

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function isScalar(value) {
    return ["string", "number", "boolean"].includes(typeof value);
  }

  function textOf(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function isNumberText(text) {
    return NUMBER.test(text) && Number.isFinite(Number(text));
  }

  function parse(text) {
    if (text.trim() === "") {
      return { value: [] };
    }
    try {
      return { value: JSON.parse(text) };
    } catch (error) {
      return { error: error instanceof RangeError ? "nested too deep" : error.message };
    }
  }

  function clone(template) {
    return template.content.firstElementChild.cloneNode(true);
  }

  function addUnknownOption(select, value) {
    if (![...select.options].some((option) => option.value === value)) {
      select.add(new Option(`${value} (unknown)`, value));
    }
    select.value = value;
  }

  // --- Conditions -----------------------------------------------------------------------

  function conditionsProblem(conditions) {
    if (!Array.isArray(conditions)) {
      return "the conditions are not a list";
    }
    if (conditions.length > MAX_ROWS) {
      return `more than ${MAX_ROWS} conditions`;
    }
    for (const [index, condition] of conditions.entries()) {
      const where = `condition ${index + 1}`;
      if (!isObject(condition)) {
        return `${where} is not an object`;
      }
      if (typeof condition.operator !== "string") {
        return `${where} has no operator`;
      }
      if (condition.attribute != null && typeof condition.attribute !== "string") {
        return `${where}: the attribute is not text`;
      }
      if (condition.negate != null && typeof condition.negate !== "boolean") {
        return `${where}: negate is not true or false`;
      }
      const values = condition.values;
      if (values != null && (!Array.isArray(values) || !values.every(isScalar))) {
        return `${where}: the values are not a list of texts and numbers`;
      }
      if (values != null && values.length > MAX_VALUES) {
        return `${where} has more than ${MAX_VALUES} values`;
      }
    }
    return null;
  }

  function conditionsBuilder(root) {
    const list = root.querySelector(".flags-condition-list");
    const rowTemplate = root.querySelector(".flags-row-template");
    const valueTemplate = root.querySelector(".flags-value-template");
    const segmentTemplate = root.querySelector(".flags-segment-template");
    const datalist = root.querySelector(".flags-attribute-list");
    datalist.id = `flags-attributes-${++counter}`;
    const operators = {};
    for (const option of rowTemplate.content.querySelectorAll(".flags-operator option")) {
      operators[option.value] = {
        attribute: Boolean(option.dataset.attribute),
        values: Boolean(option.dataset.values),
        numbers: Boolean(option.dataset.numbers),
        segment: Boolean(option.dataset.segment),
      };
    }

    function specOf(row) {
      const name = row.querySelector(".flags-operator").value;
      const original = row.flagsOriginal || {};
      // An operator the menu does not know keeps the fields it came with.
      return operators[name] || {
        attribute: original.attribute != null,
        values: true,
        numbers: false,
        segment: false,
        unknown: true,
      };
    }

    function addValue(row, value, after) {
      const segment = specOf(row).segment;
      const item = clone(segment ? segmentTemplate : valueTemplate);
      const input = item.querySelector(".flags-value-input");
      if (value !== undefined) {
        item.flagsOriginal = value;
        if (segment) {
          addUnknownOption(input, textOf(value));
        } else {
          input.value = textOf(value);
        }
      }
      const values = row.querySelector(".flags-values");
      values.insertBefore(item, after ? after.nextSibling : null);
      return input;
    }

    function drawValues(row, values) {
      row.querySelector(".flags-values").replaceChildren();
      values.forEach((value) => addValue(row, value));
      if (values.length === 0 && specOf(row).values) {
        addValue(row);
      }
    }

    function shape(row) {
      const spec = specOf(row);
      row.querySelector(".flags-attribute").hidden = !spec.attribute;
      row.querySelector(".flags-values").hidden = !spec.values;
      row.querySelector(".flags-add-value").hidden = !spec.values;
      row.classList.toggle("flags-unknown-operator", Boolean(spec.unknown));
    }

    function addRow(condition) {
      const row = clone(rowTemplate);
      row.flagsOriginal = condition;
      const attribute = row.querySelector(".flags-attribute");
      attribute.setAttribute("list", datalist.id);
      const operator = row.querySelector(".flags-operator");
      if (condition) {
        addUnknownOption(operator, condition.operator);
        attribute.value = condition.attribute || "";
        row.querySelector(".flags-negate-box").checked = condition.negate === true;
      }
      row.flagsSegment = specOf(row).segment;
      list.appendChild(row);
      drawValues(row, condition && Array.isArray(condition.values) ? condition.values : []);
      shape(row);
      return row;
    }

    function valuesOf(row, spec) {
      const values = [];
      for (const item of row.querySelectorAll(".flags-value")) {
        const text = item.querySelector(".flags-value-input").value;
        const original = item.flagsOriginal;
        const numeric = spec.numbers && isNumberText(text);
        if (original !== undefined && textOf(original) === text) {
          if (!(numeric && typeof original === "string")) {
            values.push(original);
            continue;
          }
        }
        if (text === "") {
          continue;
        }
        values.push(numeric ? Number(text) : text);
      }
      return values;
    }

    function conditionOf(row) {
      const original = row.flagsOriginal || {};
      const spec = specOf(row);
      const condition = {};
      if (spec.attribute) {
        condition.attribute = row.querySelector(".flags-attribute").value;
      } else if ("attribute" in original && !original.attribute) {
        condition.attribute = original.attribute; // "" or null, as it was
      }
      condition.operator = row.querySelector(".flags-operator").value;
      if (spec.values) {
        condition.values = valuesOf(row, spec);
      } else if ("values" in original) {
        condition.values = original.values === null ? null : [];
      }
      if (row.querySelector(".flags-negate-box").checked) {
        condition.negate = true;
      } else if ("negate" in original) {
        condition.negate = original.negate === null ? null : false;
      }
      for (const [key, value] of Object.entries(original)) {
        if (!KNOWN_CONDITION_KEYS.includes(key)) {
          condition[key] = value;
        }
      }
      return condition;
    }

    function operatorChanged(row) {
      const segment = specOf(row).segment;
      if (segment !== row.flagsSegment) {
        // Texts and segment choices do not carry over: keys of segments only, if any.
        const texts = [...row.querySelectorAll(".flags-value-input")].map((input) => input.value);
        const kept = segment ? texts.filter((text) => segmentTemplate.content.querySelector(
          `option[value="${CSS.escape(text)}"]`)) : texts.filter((text) => text !== "");
        row.flagsSegment = segment;
        drawValues(row, kept);
      } else if (specOf(row).values && !row.querySelector(".flags-value")) {
        addValue(row);
      }
      shape(row);
    }

    return {
      list,
      problem: conditionsProblem,
      draw(conditions) {
        list.replaceChildren();
        conditions.forEach((condition) => addRow(condition));
      },
      value() {
        return [...list.children].map(conditionOf);
      },
      addRow() {
        const row = addRow(null);
        row.querySelector(".flags-attribute").focus();
      },
      handle(event) {
        const target = event.target;
        const row = target.closest(".flags-condition");
        if (event.type === "click" && target.closest(".flags-add-value")) {
          addValue(row).focus();
        } else if (event.type === "click" && target.closest(".flags-remove-value")) {
          target.closest(".flags-value").remove();
        } else if (event.type === "change" && target.classList.contains("flags-operator")) {
          operatorChanged(row);
        } else if (event.type === "keydown") {
          if (event.key !== "Enter") {
            return false;
          }
          event.preventDefault(); // Enter adds a value; it never submits the whole page
          if (target.classList.contains("flags-value-input")) {
            addValue(row, undefined, target.closest(".flags-value")).focus();
          }
          return false;
        } else if (event.type !== "input" && event.type !== "change") {
          return false;
        }
        return true;
      },
    };
  }

  // --- Rollouts -------------------------------------------------------------------------

  function rolloutProblem(entries) {
    if (!Array.isArray(entries)) {
      return "the rollout is not a list";
    }
    if (entries.length > MAX_ROWS) {
      return `more than ${MAX_ROWS} variants`;
    }
    for (const [index, entry] of entries.entries()) {
      const where = `entry ${index + 1}`;
      if (!isObject(entry) || typeof entry.variant !== "string") {
        return `${where} has no variant`;
      }
      if (!Number.isSafeInteger(entry.weight) || entry.weight < 0) {
        return `${where}: the weight is not a whole number of at least 0`;
      }
    }
    return null;
  }

  function percentText(percent) {
    return String(Number(percent.toFixed(3)));
  }

  function parsePercent(text) {
    if (text.trim() === "") {
      return 0;
    }
    const percent = Number(text);
    return Number.isFinite(percent) && percent >= 0 && percent <= 100 ? percent : NaN;
  }

  function rolloutBuilder(root, source) {
    const list = root.querySelector(".flags-rollout-list");
    const rowTemplate = root.querySelector(".flags-row-template");
    const totalLine = root.querySelector(".flags-rollout-total");
    const totalValue = root.querySelector(".flags-total-value");
    const totalHint = root.querySelector(".flags-total-hint");
    const fixedTotal = Number(root.dataset.fixedTotal) || 0;
    const scale = Number(root.dataset.scale) || 100000;
    const variants = [...rowTemplate.content.querySelectorAll(".flags-variant option")].map(
      (option) => option.value,
    );
    let loadedTotal = 0;
    let typedPercents = false; // percentages typed since loading: weights follow them
    let replacedVariant = ""; // the variant served before the first rollout row was added

    function rows() {
      return [...list.children];
    }

    function showPercents() {
      const total = rows().reduce((sum, row) => sum + (row.flagsWeight || 0), 0);
      for (const row of rows()) {
        const share = total > 0 ? (100 * (row.flagsWeight || 0)) / total : 0;
        row.querySelector(".flags-percent").value = percentText(share);
        row.querySelector(".flags-weight").value = String(row.flagsWeight ?? "");
      }
    }

    function weightsFromPercents() {
      const percents = rows().map((row) => parsePercent(row.querySelector(".flags-percent").value));
      // The loaded rollout's own total when the percentages fit it (users stay where they
      // are), else the smallest power of ten that holds them; LaunchDarkly's is fixed.
      const totals = fixedTotal ? [fixedTotal] : [loadedTotal, 100, 1000, 10000, scale];
      const fits = (total) => total > 0 && percents.every((percent) => {
        const weight = (percent * total) / 100;
        return Number.isFinite(weight) && Math.abs(weight - Math.round(weight)) < 1e-6;
      });
      const total = totals.find(fits) || scale;
      rows().forEach((row, index) => {
        const percent = percents[index];
        row.flagsWeight = Number.isFinite(percent) ? Math.round((percent * total) / 100) : null;
        row.querySelector(".flags-weight").value = String(row.flagsWeight ?? "");
      });
    }

    function showTotal() {
      const empty = rows().length === 0;
      totalLine.hidden = empty;
      let total = 0;
      if (typedPercents) {
        total = rows().reduce(
          (sum, row) => sum + parsePercent(row.querySelector(".flags-percent").value), 0);
      } else if (rows().some((row) => row.flagsWeight > 0)) {
        total = 100;
      }
      const off = !Number.isFinite(total) || Math.abs(total - 100) > 0.0005;
      totalValue.value = Number.isFinite(total) ? percentText(total) : "?";
      totalLine.classList.toggle("flags-total-off", off);
      totalHint.hidden = !off;
    }

    function addRow(entry) {
      const row = clone(rowTemplate);
      row.flagsOriginal = entry;
      const select = row.querySelector(".flags-variant");
      if (entry) {
        addUnknownOption(select, entry.variant);
        row.flagsWeight = entry.weight;
      } else {
        const used = rows().map((each) => each.querySelector(".flags-variant").value);
        select.value = variants.find((key) => !used.includes(key)) || variants[0] || "";
        row.flagsWeight = 0;
      }
      list.appendChild(row);
      return row;
    }

    function servedVariant() {
      // The row's "variant" select: a rollout and one variant cannot both be served.
      const name = source.name.replace(/rollout$/, "serve_variant");
      return name === source.name ? null : document.getElementsByName(name)[0] || null;
    }

    return {
      list,
      problem: rolloutProblem,
      draw(entries) {
        list.replaceChildren();
        entries.forEach((entry) => addRow(entry));
        loadedTotal = entries.reduce((sum, entry) => sum + entry.weight, 0);
        typedPercents = false;
        showPercents();
        showTotal();
      },
      value() {
        return rows().map((row) => {
          const entry = {
            variant: row.querySelector(".flags-variant").value,
            weight: row.flagsWeight,
          };
          for (const [key, value] of Object.entries(row.flagsOriginal || {})) {
            if (!(key in entry)) {
              entry[key] = value;
            }
          }
          return entry;
        });
      },
      served: servedVariant,
      start() {
        // "— rollout —" picked with no rollout yet: a row per variant, the first at 100%.
        variants.forEach((key, index) => {
          const row = addRow({ variant: key, weight: index === 0 ? 1 : 0 });
          row.flagsOriginal = null;
        });
        loadedTotal = 0;
        typedPercents = true;
        showPercents();
        weightsFromPercents();
        showTotal();
        const first = list.querySelector(".flags-percent");
        if (first) {
          first.focus();
          first.select();
        }
      },
      addRow() {
        const first = rows().length === 0;
        const row = addRow(null);
        const percent = row.querySelector(".flags-percent");
        if (first || typedPercents) {
          const sum = rows().slice(0, -1).reduce(
            (total, each) => total + (parsePercent(each.querySelector(".flags-percent").value) || 0), 0);
          percent.value = percentText(Math.max(0, 100 - sum));
          typedPercents = true;
          weightsFromPercents();
        } else {
          percent.value = "0";
          row.querySelector(".flags-weight").value = "0";
        }
        const served = servedVariant();
        if (first && served && !served.disabled) {
          replacedVariant = served.value;
          served.value = "";
        }
        showTotal();
        percent.focus();
        percent.select();
      },
      handle(event) {
        const target = event.target;
        if (event.type === "click" && target.closest(".flags-remove-row")) {
          target.closest(".flags-rollout-row").remove();
          const served = servedVariant();
          if (rows().length === 0 && served && !served.disabled && served.value === "") {
            served.value = replacedVariant; // one variant served again, as before the rollout
          }
          if (typedPercents) {
            weightsFromPercents();
          } else {
            showPercents();
          }
        } else if (event.type === "input" && target.classList.contains("flags-percent")) {
          typedPercents = true;
          weightsFromPercents();
        } else if (event.type === "input" && target.classList.contains("flags-weight")) {
          const weight = target.value.trim() === "" ? 0 : Number(target.value);
          target.closest(".flags-rollout-row").flagsWeight =
            Number.isSafeInteger(weight) ? weight : null;
          typedPercents = false;
          const total = rows().reduce((sum, row) => sum + (row.flagsWeight || 0), 0);
          for (const row of rows()) {
            const weight = row.querySelector(".flags-weight");
            if (weight !== target) {
              weight.value = String(row.flagsWeight ?? "");
            }
            const share = total > 0 ? (100 * (row.flagsWeight || 0)) / total : 0;
            row.querySelector(".flags-percent").value = percentText(share);
          }
        } else if (event.type === "keydown") {
          if (event.key === "Enter") {
            event.preventDefault();
          }
          return false;
        } else if (event.type !== "change" || !target.classList.contains("flags-variant")) {
          return false;
        }
        showTotal();
        return true;
      },
    };
  }

  // --- The frame both share: the JSON view, the note, keeping the text box in sync ------

  function setUp(root) {
    if (root.dataset.ready || root.closest(".empty-form")) {
      return; // set up once; Django's template row for "Add another" is set up when added
    }
    root.dataset.ready = "1";
    const source = root.querySelector("textarea.flags-source");
    const frame = root.querySelector(".flags-builder-rows");
    const empty = root.querySelector(".flags-builder-empty");
    const note = root.querySelector(".flags-builder-note");
    const jsonToggle = root.querySelector(".flags-json-toggle");
    const weightsToggle = root.querySelector(".flags-weights-toggle");
    const builder = root.dataset.builder === "rollout"
      ? rolloutBuilder(root, source)
      : conditionsBuilder(root);
    const locked = source.disabled || source.readOnly;

    function showJson(show) {
      if (show) {
        source.rows = Math.min(24, Math.max(4, source.value.split("\n").length + 1));
      }
      source.hidden = !show;
      jsonToggle.setAttribute("aria-pressed", String(show));
    }

    function showNote(text) {
      note.textContent = text;
      note.hidden = !text;
      builder.list.classList.toggle("flags-stale", Boolean(text));
    }

    function refresh() {
      empty.hidden = builder.list.children.length > 0;
    }

    function load() {
      const parsed = parse(source.value);
      if (parsed.error !== undefined) {
        showNote(`The JSON is not valid (${parsed.error}); fix it in the JSON view.`);
        return false;
      }
      const value = parsed.value === null ? [] : parsed.value; // a new row's empty box
      const problem = builder.problem(value);
      if (problem) {
        showNote(`Only the JSON view can show this: ${problem}.`);
        return false;
      }
      showNote("");
      builder.draw(value);
      refresh();
      return true;
    }

    function write() {
      source.value = JSON.stringify(builder.value(), null, 2);
      showNote("");
      refresh();
    }

    function handle(event) {
      if (locked || !frame.contains(event.target)) {
        return;
      }
      if (event.type === "click" && event.target.closest(".flags-add-row")) {
        builder.addRow();
        write();
      } else if (event.type === "click" && event.target.closest(".flags-remove-row")
        && root.dataset.builder === "conditions") {
        event.target.closest(".flags-condition").remove();
        write();
      } else if (builder.handle(event)) {
        write();
      }
    }

    frame.hidden = false;
    const drawn = load();
    showJson(!drawn);
    refresh();
    for (const type of ["click", "input", "change", "keydown"]) {
      root.addEventListener(type, handle);
    }
    source.addEventListener("input", load);
    const served = builder.served ? builder.served() : null;
    if (served && !locked) {
      served.addEventListener("change", () => {
        if (served.value === "" && builder.list.children.length === 0 && load()) {
          builder.start();
          write();
        }
      });
    }
    jsonToggle.addEventListener("click", () => showJson(source.hidden));
    if (weightsToggle) {
      weightsToggle.addEventListener("click", () => {
        const shown = root.classList.toggle("flags-weights-shown");
        weightsToggle.setAttribute("aria-pressed", String(shown));
      });
    }
    if (locked) {
      for (const control of frame.querySelectorAll("input, select, button")) {
        if (control !== jsonToggle && control !== weightsToggle) {
          control.disabled = true;
        }
      }
      root.classList.add("flags-locked");
    }
  }

  function setUpAll(container) {
    container.querySelectorAll(".flags-builder").forEach(setUp);
  }

  document.addEventListener("DOMContentLoaded", () => setUpAll(document));
  document.addEventListener("formset:added", (event) => setUpAll(event.target));
})();
