//! The end-of-run picture: training and validation loss against tokens seen, and the learning
//! rate, as PNG and SVG. SVG text needs no font; PNG text uses a system TrueType font when one
//! is found (otherwise the PNG is drawn without labels and the SVG keeps them).

use crate::metrics::StepRecord;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

fn register_font() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        for p in FONT_CANDIDATES {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    recs: &[StepRecord],
    labels: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 2 / 3);
    let x_max = recs.iter().map(|r| r.tokens as f64).fold(1.0, f64::max);
    let losses: Vec<f64> = recs
        .iter()
        .map(|r| r.loss)
        .chain(recs.iter().filter_map(|r| r.val_loss))
        .filter(|x| x.is_finite())
        .collect();
    let (lo, hi) = losses
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo < hi {
        (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    } else {
        (0.0, 10.0)
    };
    let mut b = ChartBuilder::on(&top);
    b.margin(12)
        .x_label_area_size(if labels { 35 } else { 5 })
        .y_label_area_size(if labels { 55 } else { 5 });
    if labels {
        b.caption("loss", ("sans-serif", 20));
    }
    let mut chart = b
        .build_cartesian_2d(0.0..x_max, lo..hi)
        .map_err(|e| anyhow!("{e:?}"))?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("tokens")
            .y_desc("cross-entropy (nats)")
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    let train = chart
        .draw_series(LineSeries::new(
            recs.iter().map(|r| (r.tokens as f64, r.loss)),
            &BLUE,
        ))
        .map_err(|e| anyhow!("{e:?}"))?;
    if labels {
        train
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    let val: Vec<(f64, f64)> = recs
        .iter()
        .filter_map(|r| r.val_loss.map(|v| (r.tokens as f64, v)))
        .collect();
    if !val.is_empty() {
        let s = chart
            .draw_series(LineSeries::new(val.clone(), RED.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?;
        if labels {
            s.label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 3, RED.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    let lr_max = recs.iter().map(|r| r.lr).fold(1e-12, f64::max);
    let mut b = ChartBuilder::on(&bottom);
    b.margin(12)
        .x_label_area_size(if labels { 35 } else { 5 })
        .y_label_area_size(if labels { 55 } else { 5 });
    if labels {
        b.caption("learning rate", ("sans-serif", 16));
    }
    let mut chart = b
        .build_cartesian_2d(0.0..x_max, 0.0..lr_max * 1.05)
        .map_err(|e| anyhow!("{e:?}"))?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("tokens")
            .y_label_formatter(&|v| format!("{v:.1e}"))
            .draw()
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .draw_series(LineSeries::new(
            recs.iter().map(|r| (r.tokens as f64, r.lr)),
            &GREEN,
        ))
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

/// Writes `loss.svg` and `loss.png` into `dir`; returns whether the PNG has text labels.
pub fn write(dir: &Path, recs: &[StepRecord]) -> Result<bool> {
    if recs.is_empty() {
        return Ok(false);
    }
    let size = (900, 600);
    draw(
        SVGBackend::new(&dir.join("loss.svg"), size).into_drawing_area(),
        recs,
        true,
    )?;
    let labels = register_font();
    draw(
        BitMapBackend::new(&dir.join("loss.png"), size).into_drawing_area(),
        recs,
        labels,
    )?;
    Ok(labels)
}
