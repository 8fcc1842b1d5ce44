// In-browser preview (issue 16): the server's path from file bytes to P(pneumonia), run in this browser.
//
// The server decodes (ml/serving/decode.py), squashes to 224x224 with Pillow's
// bilinear filter (ml/serving/preprocess.py), runs the gate and the population
// check (ml/serving/gate.py, population_check.py) and then the model. This file
// does the same steps on the same numbers (webapp/static/preview/, written by
// `python -m ml.training.export_browser`), with TensorFlow.js's CPU backend for the
// two networks. Where it cannot be sure the server would score the file (DICOM,
// 16-bit PNG, a file that may be damaged, a gate value close to a threshold) it
// returns no score and says why: a preview must never show a score the server
// would not. Nothing here sends anything anywhere; the model files are fetched
// from this site's static files once.
(function (global) {
  "use strict";

  // Refusals, by kind; preview.js turns each kind into a translated sentence.
  const KIND = {
    DICOM: "dicom",
    NOT_IMAGE: "not_image",
    ARCHIVE: "archive",
    UNREADABLE: "unreadable",
    DAMAGED: "damaged",
    TOO_LARGE: "too_large",
    HIGH_BIT_DEPTH: "high_bit_depth",
    GATE: "gate",
    OUTSIDE: "outside",
    UNCERTAIN: "uncertain",
    DECODE: "decode",
  };

  // How far a browser value may sit from a server threshold before the preview
  // declines to guess. Browser and server pixels agree exactly for 8-bit PNGs and
  // for JPEGs the server decodes at full size; large JPEGs (decoded by the server
  // at reduced size) move the 224x224 input by about a grey level, and the
  // features with it. Measured differences on the fixtures are far inside these
  // margins (README, "Preview in the browser").
  const MARGIN = {
    spread: 2, // grey levels
    roughnessRelative: 0.1,
    colourfulnessBelow: 4, // colour cue: no preview between threshold - 4 and threshold + 8
    colourfulnessAbove: 8,
    density: 0.05, // log units of the density distance
    head: 0.5, // logit units of P(chest X-ray)
    population: 0.25, // logit units of P(adult)
    // Large JPEGs: the server decodes them at 1/2-1/8 scale in libjpeg (DCT scaling), which a
    // browser cannot do. The preview approximates it with block means and also scores the
    // full-size decode; when the two probabilities differ by more than this, the image is too
    // sensitive to the decoding to preview.
    decode: 0.005,
  };

  class Refused extends Error {
    constructor(kind) {
      super(kind);
      this.kind = kind;
    }
  }

  // --- what ml.serving.decode checks before decoding --------------------------------------------

  function sniff(bytes) {
    if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
    const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
    if (png.every(function (b, i) { return bytes[i] === b; })) return "png";
    if (bytes[128] === 0x44 && bytes[129] === 0x49 && bytes[130] === 0x43 && bytes[131] === 0x4d) return "dicom";
    if (headerlessDicom(bytes, true) || headerlessDicom(bytes, false)) return "dicom";
    return null;
  }

  // ml.serving.decode._walk_elements: three group 0002/0008 elements in ascending order.
  function headerlessDicom(bytes, explicit) {
    const LONG_VRS = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"];
    const view = new DataView(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, 1024));
    let offset = 0;
    let previous = -1;
    for (let n = 0; n < 3; n++) {
      if (offset + 8 > view.byteLength) return false;
      const group = view.getUint16(offset, true);
      const element = view.getUint16(offset + 2, true);
      const tag = group * 65536 + element;
      if ((group !== 0x0002 && group !== 0x0008) || tag <= previous) return false;
      let length;
      if (explicit) {
        const vr = String.fromCharCode(view.getUint8(offset + 4), view.getUint8(offset + 5));
        if (!/^[A-Z]{2}$/.test(vr)) return false;
        if (LONG_VRS.indexOf(vr) >= 0) {
          if (offset + 12 > view.byteLength) return false;
          length = view.getUint32(offset + 8, true);
          offset += 12;
        } else {
          length = view.getUint16(offset + 6, true);
          offset += 8;
        }
      } else {
        length = view.getUint32(offset + 4, true);
        offset += 8;
      }
      if (length === 0xffffffff || length > 1024) return false;
      offset += length;
      previous = tag;
    }
    return true;
  }

  // Walks the JPEG's markers: size and components from the frame header, and an
  // end-of-image marker after the last scan. Browsers show a truncated JPEG with a
  // grey bottom; the server fails it, so a file without its end is not previewed.
  function jpegInfo(bytes) {
    const info = { width: 0, height: 0, components: 0, complete: false };
    let i = 2;
    const n = bytes.length;
    while (i + 1 < n) {
      if (bytes[i] !== 0xff) throw new Refused(KIND.DAMAGED);
      let marker = bytes[i + 1];
      while (marker === 0xff && i + 2 < n) { i += 1; marker = bytes[i + 1]; }
      if (marker === 0xd9) { info.complete = true; break; }
      if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) { i += 2; continue; }
      if (i + 3 >= n) break;
      const length = bytes[i + 2] * 256 + bytes[i + 3];
      if (length < 2 || i + 2 + length > n) break;
      const isFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (isFrame && length >= 8) {
        info.height = bytes[i + 5] * 256 + bytes[i + 6];
        info.width = bytes[i + 7] * 256 + bytes[i + 8];
        info.components = bytes[i + 9];
      }
      i += 2 + length;
      if (marker === 0xda) {
        // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00 nor a restart.
        while (i + 1 < n && !(bytes[i] === 0xff && bytes[i + 1] !== 0 && !(bytes[i + 1] >= 0xd0 && bytes[i + 1] <= 0xd7))) i += 1;
      }
    }
    if (!info.complete || !info.width || !info.height) throw new Refused(KIND.DAMAGED);
    return info;
  }

  let crcTable = null;
  function crc32(bytes, start, end) {
    if (!crcTable) {
      crcTable = new Int32Array(256);
      for (let n = 0; n < 256; n++) {
        let c = n;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        crcTable[n] = c;
      }
    }
    let crc = -1;
    for (let i = start; i < end; i++) crc = crcTable[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
    return (crc ^ -1) >>> 0;
  }

  // Chunk walk with CRCs: a damaged PNG is not previewed even where a browser would show part of it.
  function pngInfo(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const info = { width: 0, height: 0, bitDepth: 0, colourType: 0, transparency: false, complete: false };
    let i = 8;
    while (i + 12 <= bytes.length) {
      const length = view.getUint32(i);
      const type = String.fromCharCode(bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]);
      if (i + 12 + length > bytes.length) break;
      if (crc32(bytes, i + 4, i + 8 + length) !== view.getUint32(i + 8 + length)) throw new Refused(KIND.DAMAGED);
      if (type === "IHDR") {
        info.width = view.getUint32(i + 8);
        info.height = view.getUint32(i + 12);
        info.bitDepth = bytes[i + 16];
        info.colourType = bytes[i + 17];
      } else if (type === "tRNS") {
        info.transparency = true;
      } else if (type === "IEND") {
        info.complete = true;
        break;
      }
      i += 12 + length;
    }
    if (!info.complete || !info.width || !info.height) throw new Refused(KIND.DAMAGED);
    return info;
  }

  // --- decoding to Pillow's grey ------------------------------------------------------------------

  // Pillow's RGB -> L (ITU-R 601-2 luma, 16-bit fixed point, rounded).
  function luma(r, g, b) {
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
  }

  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  async function decodeRgba(file) {
    // No colour management and no premultiplication: the server reads the stored
    // values and ignores ICC profiles and gamma. EXIF orientation is applied, as
    // the server applies it.
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (e) {
      throw new Refused(KIND.UNREADABLE);
    }
    const width = bitmap.width;
    const height = bitmap.height;
    const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height) : document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    return { width: width, height: height, rgba: context.getImageData(0, 0, width, height).data };
  }

  // ml.serving.decode._to_gray8 for 8-bit files: luma, and transparency composited on black
  // for the PNG kinds the server composites (grey+alpha, RGBA, palette).
  function toGrey(decoded, composite) {
    const n = decoded.width * decoded.height;
    const rgba = decoded.rgba;
    const grey = new Uint8Array(n);
    for (let p = 0, q = 0; p < n; p++, q += 4) {
      const l = luma(rgba[q], rgba[q + 1], rgba[q + 2]);
      const a = rgba[q + 3];
      grey[p] = composite && a !== 255 ? roundHalfEven(Math.fround(l * Math.fround(a / 255))) : l;
    }
    return grey;
  }

  // --- Pillow's BILINEAR resize (libImaging/Resample.c), 8-bit, with its antialiasing ----------

  const PRECISION_BITS = 32 - 8 - 2;

  function coefficients(inSize, outSize) {
    const scale = inSize / outSize;
    const filterscale = scale < 1 ? 1 : scale;
    const support = 1.0 * filterscale; // bilinear support 1, widened when shrinking
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Int32Array(outSize * ksize);
    const k = new Float64Array(ksize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1.0 / filterscale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0.0;
      for (let x = 0; x < xmax; x++) {
        let t = (x + xmin - center + 0.5) * ss;
        if (t < 0) t = -t;
        const w = t < 1.0 ? 1.0 - t : 0.0;
        k[x] = w;
        ww += w;
      }
      for (let x = 0; x < ksize; x++) {
        let value = x < xmax ? k[x] : 0;
        if (x < xmax && ww !== 0.0) value /= ww;
        // normalize_coeffs_8bpc: to fixed point, rounding half away from zero
        kk[xx * ksize + x] = value < 0 ? Math.trunc(-0.5 + value * (1 << PRECISION_BITS)) : Math.trunc(0.5 + value * (1 << PRECISION_BITS));
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return { ksize: ksize, bounds: bounds, kk: kk };
  }

  function clip8(sum) {
    const v = sum >> PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  // (width x height) uint8 grey -> (outW x outH), horizontal pass first, uint8 in between, as Pillow does.
  function resizeBilinear(grey, width, height, outW, outH) {
    let source = grey;
    let rowsFirst = 0;
    let srcW = width;
    const vertical = outH !== height ? coefficients(height, outH) : null;
    if (outW !== width) {
      const c = coefficients(width, outW);
      // Only the source rows the vertical pass will read (ImagingResampleInner's ybox).
      rowsFirst = vertical ? vertical.bounds[0] : 0;
      const rowsLast = vertical ? vertical.bounds[outH * 2 - 2] + vertical.bounds[outH * 2 - 1] : height;
      const rows = rowsLast - rowsFirst;
      const out = new Uint8Array(outW * rows);
      for (let yy = 0; yy < rows; yy++) {
        const base = (yy + rowsFirst) * width;
        for (let xx = 0; xx < outW; xx++) {
          const xmin = c.bounds[xx * 2];
          const xmax = c.bounds[xx * 2 + 1];
          const kOffset = xx * c.ksize;
          let ss = 1 << (PRECISION_BITS - 1);
          for (let x = 0; x < xmax; x++) ss += source[base + x + xmin] * c.kk[kOffset + x];
          out[yy * outW + xx] = clip8(ss);
        }
      }
      source = out;
      srcW = outW;
    }
    if (!vertical) return source;
    const out = new Uint8Array(srcW * outH);
    for (let yy = 0; yy < outH; yy++) {
      const ymin = vertical.bounds[yy * 2] - rowsFirst;
      const ymax = vertical.bounds[yy * 2 + 1];
      const kOffset = yy * vertical.ksize;
      for (let xx = 0; xx < srcW; xx++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < ymax; y++) ss += source[(y + ymin) * srcW + xx] * vertical.kk[kOffset + y];
        out[yy * srcW + xx] = clip8(ss);
      }
    }
    return out;
  }

  // ml.serving.decode._draft: Pillow asks libjpeg for the largest 1/2, 1/4 or 1/8 scale that
  // keeps both sides at least twice the model's input.
  const DRAFT_OVERSAMPLE = 2;

  // libjpeg's reduced-size decode, approximated: means of scale x scale blocks (edges
  // replicated, as an encoder pads its last blocks), rounded to uint8.
  function blockMeans(grey, width, height, scale) {
    const w = Math.ceil(width / scale);
    const h = Math.ceil(height / scale);
    const out = new Uint8Array(w * h);
    const area = scale * scale;
    for (let by = 0; by < h; by++) {
      for (let bx = 0; bx < w; bx++) {
        let sum = 0;
        for (let dy = 0; dy < scale; dy++) {
          const y = Math.min(by * scale + dy, height - 1);
          for (let dx = 0; dx < scale; dx++) sum += grey[y * width + Math.min(bx * scale + dx, width - 1)];
        }
        out[by * w + bx] = Math.round(sum / area);
      }
    }
    return { grey: out, width: w, height: h };
  }

  function squash(grey, width, height, size) {
    if (width === size && height === size) return grey;
    return resizeBilinear(grey, width, height, size, size);
  }

  // --- the gate's cheap layers (ml.serving.gate.pixel_statistics, colourfulness) -----------------

  function pixelStatistics(pixels, size) {
    const counts = new Float64Array(256);
    for (let i = 0; i < pixels.length; i++) counts[pixels[i]] += 1;
    let cumulative = 0;
    let low = 0;
    let high = 0;
    for (let level = 0; level < 256; level++) {
      cumulative += counts[level];
      const share = cumulative / pixels.length;
      if (share < 0.05) low += 1;
      if (share < 0.95) high += 1;
    }
    const spread = high - low;
    let dx = 0;
    let dy = 0;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = pixels[y * size + x];
        if (x + 1 < size) dx += Math.abs(pixels[y * size + x + 1] - v);
        if (y + 1 < size) dy += Math.abs(pixels[(y + 1) * size + x] - v);
      }
    }
    dx /= size * (size - 1);
    dy /= size * (size - 1);
    return { spread: spread, roughness: (0.5 * (dx + dy)) / Math.max(spread, 1) };
  }

  // Hasler & Suesstrunk on the colour original, as ml.serving.gate.colourfulness_of_file sees it:
  // JPEGs at the 1/1-1/8 scale its draft decode picks (approximated by block means), every
  // `step`-th pixel of about 256 on the long side. Exactly 0 for grey images.
  function colourfulness(decoded, draftScale) {
    const rgba = decoded.rgba;
    const w = decoded.width;
    const h = decoded.height;
    let grey = true;
    for (let q = 0; q < rgba.length; q += 4) {
      if (rgba[q] !== rgba[q + 1] || rgba[q] !== rgba[q + 2]) { grey = false; break; }
    }
    if (grey) return 0;
    const s = draftScale;
    const dw = Math.ceil(w / s);
    const dh = Math.ceil(h / s);
    const step = Math.max(1, Math.ceil(Math.max(dw, dh) / 256));
    let n = 0, sumRg = 0, sumYb = 0, sumRg2 = 0, sumYb2 = 0;
    for (let by = 0; by < dh; by += step) {
      for (let bx = 0; bx < dw; bx += step) {
        let r = 0, g = 0, b = 0, count = 0;
        for (let y = by * s; y < Math.min(h, by * s + s); y++) {
          for (let x = bx * s; x < Math.min(w, bx * s + s); x++) {
            const q = (y * w + x) * 4;
            r += rgba[q]; g += rgba[q + 1]; b += rgba[q + 2]; count += 1;
          }
        }
        r /= count; g /= count; b /= count;
        const rg = r - g;
        const yb = 0.5 * (r + g) - b;
        n += 1; sumRg += rg; sumYb += yb; sumRg2 += rg * rg; sumYb2 += yb * yb;
      }
    }
    const meanRg = sumRg / n;
    const meanYb = sumYb / n;
    const stdRg = Math.sqrt(Math.max(sumRg2 / n - meanRg * meanRg, 0));
    const stdYb = Math.sqrt(Math.max(sumYb2 / n - meanYb * meanYb, 0));
    return Math.hypot(stdRg, stdYb) + 0.3 * Math.hypot(meanRg, meanYb);
  }

  // Pillow's JpegImageFile.draft(mode, (64, 64)) scale: the largest of 8, 4, 2, 1 that still covers 64 px.
  function draftScale(width, height, requested) {
    const scale = Math.min(Math.floor(width / requested), Math.floor(height / requested));
    for (const s of [8, 4, 2, 1]) if (scale >= s) return s;
    return 1;
  }

  // --- the exported networks, run with tf.js --------------------------------------------------------

  function Engine(tf, model, weights) {
    this.tf = tf;
    this.model = model;
    this.buffer = weights;
    this.tensors = {};
  }

  Engine.prototype.array = function (entry) {
    const count = entry.shape.reduce(function (a, b) { return a * b; }, 1);
    if (entry.dtype === "float64") return new Float64Array(this.buffer, entry.offset, count);
    return new Float32Array(this.buffer, entry.offset, count);
  };

  Engine.prototype.weight = function (entry) {
    const key = entry.offset;
    // Kept: made on first use inside a tidy() that would otherwise dispose of them.
    if (!this.tensors[key]) this.tensors[key] = this.tf.keep(this.tf.tensor(this.array(entry), entry.shape, "float32"));
    return this.tensors[key];
  };

  // One forward pass over a (1, ...) Float32Array input; returns the output's values.
  Engine.prototype.run = function (graph, floats, shape) {
    const tf = this.tf;
    const self = this;
    return tf.tidy(function () {
      const values = {};
      values[graph.input] = tf.tensor(floats, shape);
      graph.nodes.forEach(function (node) {
        if (node.op === "input") return;
        const args = node.inputs.map(function (name) { return values[name]; });
        values[node.name] = self.op(node, args);
      });
      return values[graph.output].dataSync();
    });
  };

  Engine.prototype.op = function (node, args) {
    const tf = this.tf;
    const x = args[0];
    switch (node.op) {
      case "reshape": return tf.reshape(x, [x.shape[0]].concat(node.shape));
      case "rescale": return tf.add(tf.mul(x, tf.scalar(node.scale)), tf.scalar(node.offset));
      case "concat": return tf.concat(args, node.axis);
      case "conv2d": return tf.add(tf.conv2d(x, this.weight(node.kernel), node.strides, node.padding), this.weight(node.bias));
      case "depthwise": return tf.add(tf.depthwiseConv2d(x, this.weight(node.kernel), node.strides, node.padding), this.weight(node.bias));
      case "relu": return node.max === null ? tf.relu(x) : tf.clipByValue(x, 0, node.max);
      case "pad": return tf.pad(x, [[0, 0], node.padding[0], node.padding[1], [0, 0]]);
      case "avgpool": return tf.avgPool(x, node.pool, node.strides, node.padding);
      case "global_average": return tf.mean(x, [1, 2]);
      case "flatten": return tf.reshape(x, [x.shape[0], -1]);
      case "dense": return tf.add(tf.matMul(x, this.weight(node.kernel)), this.weight(node.bias));
      case "identity": return x;
      default: throw new Error("preview: no op " + node.op);
    }
  };

  function logitOf(p) {
    return Math.log(p) - Math.log1p(-p);
  }

  function sigmoid(z) {
    return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
  }

  // ml.serving.gate: density distance and head probabilities from the backbone's features.
  Engine.prototype.gateScores = function (features) {
    const gate = this.model.gate;
    const p = {};
    for (const name in gate.params) p[name] = this.array(gate.params[name]);
    const width = features.length;
    const z = new Float64Array(width);
    for (let i = 0; i < width; i++) z[i] = Math.sqrt(Math.max(features[i], 0));
    const dims = gate.params.pca_components.shape[0];
    let inside2 = 0, mahalanobis = 0, centred2 = 0;
    const centred = new Float64Array(width);
    for (let i = 0; i < width; i++) { centred[i] = z[i] - p.feature_mean[i]; centred2 += centred[i] * centred[i]; }
    for (let d = 0; d < dims; d++) {
      let dot = 0;
      for (let i = 0; i < width; i++) dot += centred[i] * p.pca_components[d * width + i];
      inside2 += dot * dot;
      mahalanobis += (dot * dot) / p.pca_variances[d];
    }
    const residual = Math.max(centred2 - inside2, 0) / p.residual_variance[0];
    const distance = Math.sqrt((mahalanobis + residual) / width);
    const classes = gate.classes.length;
    const logits = new Float64Array(classes);
    for (let c = 0; c < classes; c++) {
      let s = p.head_bias[c];
      for (let i = 0; i < width; i++) s += ((z[i] - p.head_mean[i]) / p.head_scale[i]) * p.head_weights[c * width + i];
      logits[c] = s;
    }
    const top = Math.max.apply(null, Array.from(logits));
    let total = 0;
    const probabilities = Array.from(logits, function (l) { const e = Math.exp(l - top); total += e; return e; }).map(function (e) { return e / total; });
    const chest = Math.min(Math.max(probabilities[gate.classes.indexOf("chest_xray")], 1e-7), 1 - 1e-7);
    const t = gate.thresholds;
    return {
      densityDistance: distance,
      densityMargin: Math.log(t.density_distance) - Math.log(Math.max(distance, 1e-12)),
      headMargin: logitOf(chest) - logitOf(t.head_chest_probability),
      chestProbability: chest,
    };
  };

  // ml.serving.population_check: logit of P(adult) from the same features.
  Engine.prototype.populationLogit = function (features) {
    const params = this.model.population.params;
    const mean = this.array(params.mean), scale = this.array(params.scale), coef = this.array(params.coef);
    let s = this.array(params.intercept)[0];
    for (let i = 0; i < features.length; i++) s += ((Math.sqrt(Math.max(features[i], 0)) - mean[i]) / scale[i]) * coef[i];
    return s;
  };

  // The card's calibration: P = sigmoid(logit / temperature + bias).
  Engine.prototype.probability = function (floats) {
    const s = this.model.screener;
    const logit = this.run(s.graph, floats, [1, s.input_size, s.input_size])[0];
    return sigmoid(logit / s.temperature + s.bias);
  };

  // Everything the server decides for one squashed 224x224 input, plus the probability when it would score.
  Engine.prototype.scorePixels = function (pixels, colour) {
    const size = this.model.screener.input_size;
    const t = this.model.gate.thresholds;
    const stats = pixelStatistics(pixels, size);
    const out = { spread: stats.spread, roughness: stats.roughness, colourfulness: colour };
    const floats = Float32Array.from(pixels);
    const features = this.run(this.model.gate.graph, floats, [1, size, size, 1]);
    Object.assign(out, this.gateScores(features));
    out.populationLogit = this.populationLogit(features);
    out.probability = this.probability(floats);

    const near = function (value, threshold, margin) { return Math.abs(value - threshold) <= margin; };
    if (near(stats.spread, t.min_spread, MARGIN.spread) || near(stats.roughness, t.max_roughness, t.max_roughness * MARGIN.roughnessRelative)) {
      out.refused = KIND.UNCERTAIN;
    } else if (stats.spread < t.min_spread || stats.roughness > t.max_roughness) {
      out.refused = KIND.GATE;
    } else if (colour > t.max_colourfulness - MARGIN.colourfulnessBelow && colour <= t.max_colourfulness + MARGIN.colourfulnessAbove) {
      out.refused = KIND.UNCERTAIN;
    } else if (colour > t.max_colourfulness) {
      out.refused = KIND.GATE;
    } else if (Math.abs(out.densityMargin) <= MARGIN.density || Math.abs(out.headMargin) <= MARGIN.head) {
      out.refused = KIND.UNCERTAIN;
    } else if (out.densityMargin < 0 || out.headMargin < 0) {
      out.refused = KIND.GATE;
    } else if (near(out.populationLogit, this.model.population.threshold_logit, MARGIN.population)) {
      out.refused = KIND.UNCERTAIN;
    } else if (out.populationLogit >= this.model.population.threshold_logit) {
      out.refused = KIND.OUTSIDE;
    }
    return out;
  };

  // File -> {probability, ...} or {refused: kind}. `limits`: maxBytes, maxPixels (the server's
  // settings); `measure` keeps the input and a refused image's probability, for the bench only.
  Engine.prototype.scoreFile = async function (file, limits) {
    const started = performance.now();
    try {
      if (file.size === 0) throw new Refused(KIND.NOT_IMAGE);
      if (file.size > limits.maxBytes) throw new Refused(KIND.TOO_LARGE);
      const bytes = new Uint8Array(await file.arrayBuffer());
      const format = sniff(bytes.subarray(0, 1024));
      if (format === "dicom") throw new Refused(KIND.DICOM);
      if (format === null && bytes[0] === 0x50 && bytes[1] === 0x4b) throw new Refused(KIND.ARCHIVE);
      if (format === null) throw new Refused(KIND.NOT_IMAGE);
      let composite = false;
      let colourScale = 1;
      let greyFile = false;
      let info;
      if (format === "jpeg") {
        info = jpegInfo(bytes);
        greyFile = info.components === 1;
        colourScale = draftScale(info.width, info.height, 64);
      } else {
        info = pngInfo(bytes);
        if (info.bitDepth === 16) throw new Refused(KIND.HIGH_BIT_DEPTH);
        // tRNS on grey or RGB: the server ignores it, a canvas cannot give back the hidden colours.
        if (info.transparency && (info.colourType === 0 || info.colourType === 2)) throw new Refused(KIND.UNREADABLE);
        composite = info.colourType === 3 || info.colourType === 4 || info.colourType === 6;
        greyFile = info.colourType === 0 || info.colourType === 4;
      }
      if (info.width * info.height > limits.maxPixels) throw new Refused(KIND.TOO_LARGE);
      const decoded = await decodeRgba(file);
      const size = this.model.screener.input_size;
      const grey = toGrey(decoded, composite);
      const scale = format === "jpeg" ? draftScale(info.width, info.height, size * DRAFT_OVERSAMPLE) : 1;
      let pixels;
      let fullSize = null;
      if (scale > 1) {
        const reduced = blockMeans(grey, decoded.width, decoded.height, scale);
        pixels = squash(reduced.grey, reduced.width, reduced.height, size);
        fullSize = squash(grey, decoded.width, decoded.height, size);
      } else {
        pixels = squash(grey, decoded.width, decoded.height, size);
      }
      const colour = greyFile ? 0 : colourfulness(decoded, colourScale);
      await new Promise(function (resolve) { setTimeout(resolve, 0); }); // let the page (or worker) breathe
      const result = this.scorePixels(pixels, colour);
      result.draftScale = scale;
      if (fullSize) {
        result.decodeSpread = Math.abs(this.probability(Float32Array.from(fullSize)) - result.probability);
        if (!result.refused && result.decodeSpread > MARGIN.decode) result.refused = KIND.DECODE;
      }
      result.format = format;
      result.width = decoded.width;
      result.height = decoded.height;
      result.ms = performance.now() - started;
      if (limits.measure) {
        result.pixels = Array.from(pixels); // bench.browser_preview compares them with the server's
      } else if (result.refused) {
        delete result.probability; // what the server would not show never leaves the engine
      }
      return result;
    } catch (error) {
      if (error instanceof Refused) return { refused: error.kind, ms: performance.now() - started };
      throw error;
    }
  };

  // Loads tf.js (already on the page) and the exported model; resolves to an Engine.
  async function load(tf, modelUrl, weightsUrl, exportId) {
    const fetched = await Promise.all([
      fetch(modelUrl, { credentials: "same-origin" }).then(function (r) { if (!r.ok) throw new Error("model"); return r.json(); }),
      fetch(weightsUrl, { credentials: "same-origin" }).then(function (r) { if (!r.ok) throw new Error("weights"); return r.arrayBuffer(); }),
    ]);
    if (fetched[0].export_id !== exportId) throw new Error("preview: the model files are not the exported ones the page expects");
    await tf.setBackend("cpu");
    await tf.ready();
    return new Engine(tf, fetched[0], fetched[1]);
  }

  global.PneumoPreviewEngine = {
    KIND: KIND,
    MARGIN: MARGIN,
    load: load,
    sniff: sniff,
    jpegInfo: jpegInfo,
    pngInfo: pngInfo,
    luma: luma,
    resizeBilinear: resizeBilinear,
    pixelStatistics: pixelStatistics,
    sigmoid: sigmoid,
    logit: logitOf,
  };
})(typeof window !== "undefined" ? window : self); // the page, or preview-worker.js
