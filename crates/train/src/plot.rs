//! The end-of-run picture: training and validation loss against tokens seen, and the learning
//! rate, as PNG and SVG. Text is laid out with a system TrueType font when one is found
//! (DejaVu, Liberation, Arial); without one the curves are drawn without labels.

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
                // Plotters looks fonts up by family name; some default styles ask for serif or
                // monospace, so the one font serves all three.
                let ok = ["sans-serif", "serif", "monospace"].iter().all(|fam| {
                    plotters::style::register_font(fam, FontStyle::Normal, bytes).is_ok()
                });
                if ok {
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

/// Writes `loss.svg` and `loss.png` into `dir`; returns whether they carry text labels.
pub fn write(dir: &Path, recs: &[StepRecord]) -> Result<bool> {
    if recs.is_empty() {
        return Ok(false);
    }
    let size = (900, 600);
    let mut labels = register_font();
    let svg = dir.join("loss.svg");
    let png = dir.join("loss.png");
    // Text layout can still fail on an unusual font; the curves matter more than the labels,
    // so such a failure redraws both pictures without text rather than losing them.
    let drawn = draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        recs,
        labels,
    )
    .and_then(|_| {
        draw(
            BitMapBackend::new(&png, size).into_drawing_area(),
            recs,
            labels,
        )
    });
    if let Err(e) = drawn {
        if !labels {
            return Err(e);
        }
        eprintln!("note: drawing plot labels failed ({e:#}); drawing the curves without text");
        labels = false;
        draw(SVGBackend::new(&svg, size).into_drawing_area(), recs, false)?;
        draw(
            BitMapBackend::new(&png, size).into_drawing_area(),
            recs,
            false,
        )?;
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<StepRecord> = (0..50)
            .map(|i| StepRecord {
                step: i,
                tokens: (i + 1) * 1000,
                loss: 5.0 / (1.0 + i as f64 * 0.1),
                val_loss: (i % 10 == 9).then_some(4.0 / (1.0 + i as f64 * 0.1)),
                lr: 1e-3 * (i as f64 / 50.0),
                ..Default::default()
            })
            .collect();
        write(dir.path(), &recs).unwrap();
        assert!(
            std::fs::metadata(dir.path().join("loss.png"))
                .unwrap()
                .len()
                > 1000
        );
        assert!(std::fs::read_to_string(dir.path().join("loss.svg"))
            .unwrap()
            .contains("<svg"));
    }
}
