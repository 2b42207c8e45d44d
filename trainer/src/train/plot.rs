//! The loss-curve PNG: a small raster plotter with its own 5×7 bitmap font
//! (no font files, no system libraries) and a PNG encoder over `flate2`.
//!
//! The plot shows each step's loss (light) and its running mean (dark), with
//! labelled axes (step, loss) and tick values.

use std::io::Write;
use std::path::Path;

use crate::error::Result;

/// An RGB canvas.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [20, 20, 20];
const GRID: Rgb = [225, 225, 225];
const RAW: Rgb = [160, 190, 235];
const MEAN: Rgb = [20, 70, 170];

/// Glyph rows of the 5×7 font (bit 4 is the leftmost pixel), for the
/// characters `0-9 A-Z . - + ( ) : / = ,` and space.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        _ => [0; 7],
    }
}

/// Pixel scale of the font (each glyph pixel is SCALE × SCALE).
const SCALE: usize = 2;
/// Horizontal advance of one character, in pixels.
const ADVANCE: usize = 6 * SCALE;
/// Height of one line of text, in pixels.
const TEXT_HEIGHT: usize = 7 * SCALE;

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![WHITE; width * height],
        }
    }

    fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.pixels[y as usize * self.width + x as usize] = color;
        }
    }

    /// A line from (x0, y0) to (x1, y1), `thick` pixels wide (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for ox in 0..thick {
                for oy in 0..thick {
                    self.set(x + ox - thick / 2, y + oy - thick / 2, color);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// `text` with its top-left corner at (x, y).
    fn text(&mut self, x: i64, y: i64, text: &str, color: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for s in 0..SCALE * SCALE {
                            self.set(
                                x + (i * ADVANCE + col * SCALE + s % SCALE) as i64,
                                y + (r * SCALE + s / SCALE) as i64,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }

    /// `text` written downwards, one character per line, centred on (x, y).
    fn text_vertical(&mut self, x: i64, y: i64, text: &str, color: Rgb) {
        let line = (TEXT_HEIGHT + SCALE * 2) as i64;
        let top = y - line * text.chars().count() as i64 / 2;
        for (i, c) in text.chars().enumerate() {
            self.text(x, top + i as i64 * line, &c.to_string(), color);
        }
    }

    /// The canvas as a PNG file (8-bit RGB, no interlace).
    fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.height * (1 + self.width * 3));
        for row in self.pixels.chunks(self.width) {
            raw.push(0); // filter: none
            raw.extend(row.iter().flatten());
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).expect("writing to memory");
        let idat = z.finish().expect("writing to memory");
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend((self.width as u32).to_be_bytes());
        ihdr.extend((self.height as u32).to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]); // depth 8, RGB, deflate, adaptive filters, no interlace
        let mut out = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];
        for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", Vec::new())] {
            out.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(&data);
            out.extend(kind);
            out.extend(&data);
            out.extend(crc.sum().to_be_bytes());
        }
        out
    }
}

/// Tick positions over `[lo, hi]`: multiples of 1, 2 or 5 × 10^k, about `target` of them.
fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(1e-12);
    let rough = span / target.max(1) as f64;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// A tick value with as many decimals as the tick step needs.
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

/// Renders the loss curve of `losses` (one per step, `None` for skipped steps)
/// as a PNG: raw per-step values and a running mean over `window` steps.
pub fn render_loss_png(losses: &[Option<f64>], title: &str, window: usize) -> Vec<u8> {
    let (width, height) = (900usize, 560usize);
    let (left, right, top, bottom) = (100i64, 30i64, 50i64, 70i64);
    let mut canvas = Canvas::new(width, height);
    let points: Vec<(usize, f64)> = losses
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.filter(|v| v.is_finite()).map(|v| (i, v)))
        .collect();
    let (x0, x1) = (left, width as i64 - right);
    let (y0, y1) = (height as i64 - bottom, top);
    let steps = losses.len().max(2) - 1;
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (lo, hi) = if points.is_empty() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        let pad = 0.05 * (hi - lo);
        (
            (lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY }),
            hi + pad,
        )
    };
    let px = |step: f64| x0 + ((step / steps as f64) * (x1 - x0) as f64).round() as i64;
    let py = |v: f64| y0 - (((v - lo) / (hi - lo)) * (y0 - y1) as f64).round() as i64;

    let (yticks, ystep) = ticks(lo, hi, 6);
    for &v in &yticks {
        let y = py(v);
        canvas.line((x0, y), (x1, y), GRID, 1);
        let label = tick_label(v, ystep);
        let w = (label.len() * ADVANCE) as i64;
        canvas.text(x0 - 8 - w, y - TEXT_HEIGHT as i64 / 2, &label, BLACK);
    }
    let (xticks, xstep) = ticks(0.0, steps as f64, 8);
    for &v in &xticks {
        let x = px(v);
        canvas.line((x, y0), (x, y1), GRID, 1);
        let label = tick_label(v, xstep.max(1.0));
        let w = (label.len() * ADVANCE) as i64;
        canvas.text(x - w / 2, y0 + 10, &label, BLACK);
    }
    canvas.line((x0, y0), (x1, y0), BLACK, 2);
    canvas.line((x0, y0), (x0, y1), BLACK, 2);

    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        canvas.line((px(a.0 as f64), py(a.1)), (px(b.0 as f64), py(b.1)), RAW, 1);
    }
    let window = window.max(1);
    let mean: Vec<(usize, f64)> = (0..points.len())
        .map(|i| {
            let from = i.saturating_sub(window - 1);
            let slice = &points[from..=i];
            (
                points[i].0,
                slice.iter().map(|p| p.1).sum::<f64>() / slice.len() as f64,
            )
        })
        .collect();
    for pair in mean.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        canvas.line(
            (px(a.0 as f64), py(a.1)),
            (px(b.0 as f64), py(b.1)),
            MEAN,
            3,
        );
    }

    let title_w = (title.len() * ADVANCE) as i64;
    canvas.text((width as i64 - title_w) / 2, 6, title, BLACK);
    let xlabel = "STEP";
    canvas.text(
        (x0 + x1) / 2 - (xlabel.len() * ADVANCE) as i64 / 2,
        height as i64 - 30,
        xlabel,
        BLACK,
    );
    canvas.text_vertical(14, (y0 + y1) / 2, "LOSS", BLACK);
    let legend = format!("LIGHT: PER STEP   DARK: MEAN OF {window}");
    canvas.text(
        x1 - (legend.len() * ADVANCE) as i64,
        top - 20,
        &legend,
        MEAN,
    );
    canvas.png()
}

/// Writes [`render_loss_png`] to `path` atomically.
pub fn write_loss_png(path: &Path, losses: &[Option<f64>], title: &str) -> Result<()> {
    let window = (losses.len() / 20).clamp(1, 50);
    let png = render_loss_png(losses, title, window);
    super::checkpoint::write_atomic(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the PNG written above (our own layout: one IDAT, filter 0).
    fn decode(png: &[u8]) -> (usize, usize, Vec<u8>) {
        use std::io::Read;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut at = 8;
        let (mut w, mut h, mut idat) = (0, 0, Vec::new());
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            let mut crc = flate2::Crc::new();
            crc.update(&png[at + 4..at + 8 + len]);
            let stored = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc.sum(), stored, "CRC of chunk {kind:?}");
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), h * (1 + 3 * w));
        (w, h, raw)
    }

    #[test]
    fn loss_plot_is_a_valid_png_with_both_curves_and_labels() {
        let losses: Vec<Option<f64>> = (0..300)
            .map(|i| (i != 40).then(|| 3.0 * (-(i as f64) / 80.0).exp() + 0.5))
            .collect();
        let png = render_loss_png(&losses, "TRAINING LOSS", 10);
        let (w, h, raw) = decode(&png);
        assert_eq!((w, h), (900, 560));
        let count = |c: Rgb| {
            raw.chunks(1 + 3 * w)
                .flat_map(|row| row[1..].chunks(3))
                .filter(|p| *p == c)
                .count()
        };
        assert!(count(MEAN) > 500, "running mean drawn");
        assert!(count(RAW) > 100, "raw curve drawn");
        assert!(count(BLACK) > 2000, "axes and labels drawn");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (t, step) = ticks(0.37, 4.2, 6);
        assert_eq!(step, 1.0);
        assert_eq!(t, vec![1.0, 2.0, 3.0, 4.0]);
        let (t, step) = ticks(0.0, 299.0, 8);
        assert_eq!(step, 50.0);
        assert_eq!(t.len(), 6);
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(150.0, 50.0), "150");
    }

    #[test]
    fn every_label_character_has_a_glyph() {
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,-+=():/".chars() {
            assert_ne!(glyph(c), [0; 7], "{c}");
        }
    }
}
