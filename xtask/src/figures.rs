//! SVG figures, drawn with plotters and the embedded DejaVu Sans font (no system fonts).

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;
use std::path::Path;
use std::sync::Once;

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default()
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// E0b: prototype paths of gradient descent and EM (left), soft k-means objective traces
/// (middle), full-covariance log-likelihood traces (right).
pub fn em_figure(art: &Value, path: &Path) -> Result<(), String> {
    fonts();
    let root = SVGBackend::new(path, (1350, 430)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let parts = root.split_evenly((1, 3));
    let x = floats(&art["x"]);
    let (mut x0, mut x1, mut y0, mut y1) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for p in x.chunks(2) {
        x0 = x0.min(p[0]);
        x1 = x1.max(p[0]);
        y0 = y0.min(p[1]);
        y1 = y1.max(p[1]);
    }
    let mut c = ChartBuilder::on(&parts[0])
        .caption("prototypes: GD (blue) and EM (red)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(x0 - 0.3..x1 + 0.3, y0 - 0.3..y1 + 0.3)
        .map_err(err)?;
    c.configure_mesh().disable_mesh().draw().map_err(err)?;
    c.draw_series(
        x.chunks(2).map(|p| Circle::new((p[0], p[1]), 2, RGBColor(190, 190, 190).filled())),
    )
    .map_err(err)?;
    let paths = |key: &str| -> Vec<Vec<f64>> {
        art[key].as_array().map(|a| a.iter().map(floats).collect()).unwrap_or_default()
    };
    let (gd, emp) = (paths("gd_path"), paths("em_path"));
    let k = gd.first().map_or(0, |v| v.len() / 2);
    for j in 0..k {
        c.draw_series(LineSeries::new(
            gd.iter().map(|m| (m[2 * j], m[2 * j + 1])),
            PALETTE[0].stroke_width(2),
        ))
        .map_err(err)?;
        c.draw_series(
            emp.iter().map(|m| Cross::new((m[2 * j], m[2 * j + 1]), 4, PALETTE[3].stroke_width(1))),
        )
        .map_err(err)?;
    }
    let cent = floats(&art["centres"]);
    c.draw_series(cent.chunks(2).map(|p| TriangleMarker::new((p[0], p[1]), 7, BLACK.filled())))
        .map_err(err)?;
    for (i, (key_em, key_gd, title)) in [
        ("em_trace", "gd_trace", "soft k-means: Σ lse(−d)"),
        ("em_full_trace", "gd_full_trace", "full-covariance log-likelihood"),
    ]
    .iter()
    .enumerate()
    {
        let (e, g) = (floats(&art[*key_em]), floats(&art[*key_gd]));
        let all: Vec<f64> = e.iter().chain(&g).copied().collect();
        if all.is_empty() {
            continue;
        }
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = (hi - lo).max(1e-9);
        let n = e.len().max(g.len()).max(2) as f64;
        let mut c = ChartBuilder::on(&parts[i + 1])
            .caption(*title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, (lo - 0.05 * span)..(hi + 0.05 * span))
            .map_err(err)?;
        c.configure_mesh().x_desc("EM iteration = 10 GD steps").draw().map_err(err)?;
        c.draw_series(LineSeries::new(
            e.iter().enumerate().map(|(t, v)| (t as f64, *v)),
            PALETTE[3].stroke_width(2),
        ))
        .map_err(err)?
        .label("EM")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], PALETTE[3]));
        c.draw_series(LineSeries::new(
            g.iter().enumerate().map(|(t, v)| (t as f64, *v)),
            PALETTE[0].stroke_width(2),
        ))
        .map_err(err)?
        .label("gradient descent")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], PALETTE[0]));
        c.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// The segment of `w·x + b = 0` inside the box.
fn clip(w: (f64, f64), b: f64, bx: [f64; 4]) -> Option<[(f64, f64); 2]> {
    let mut pts: Vec<(f64, f64)> = Vec::new();
    let inside = |p: (f64, f64)| {
        p.0 >= bx[0] - 1e-9 && p.0 <= bx[1] + 1e-9 && p.1 >= bx[2] - 1e-9 && p.1 <= bx[3] + 1e-9
    };
    if w.1.abs() > 1e-12 {
        for xv in [bx[0], bx[1]] {
            let p = (xv, -(w.0 * xv + b) / w.1);
            if inside(p) {
                pts.push(p);
            }
        }
    }
    if w.0.abs() > 1e-12 {
        for yv in [bx[2], bx[3]] {
            let p = (-(w.1 * yv + b) / w.0, yv);
            if inside(p)
                && !pts.iter().any(|q| (q.0 - p.0).abs() < 1e-9 && (q.1 - p.1).abs() < 1e-9)
            {
                pts.push(p);
            }
        }
    }
    (pts.len() >= 2).then(|| [pts[0], pts[1]])
}

/// E1: a grid of panels (rows = data sets, columns = activations), each with the data and
/// every hidden unit's line `w·x + b = 0` clipped to the data's box.
pub fn lines_grid(
    panels: &[(String, String, Value)],
    rows: usize,
    cols: usize,
    path: &Path,
) -> Result<(), String> {
    fonts();
    let (pw, ph) = (260u32, 250u32);
    let root = SVGBackend::new(path, (pw * cols.max(1) as u32, ph * rows.max(1) as u32))
        .into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((rows.max(1), cols.max(1)));
    for (i, (ds, act, art)) in panels.iter().enumerate() {
        let Some(area) = areas.get(i) else { break };
        let bx: Vec<f64> = floats(&art["box"]);
        if bx.len() != 4 {
            continue;
        }
        let pad = 0.05 * ((bx[1] - bx[0]).max(bx[3] - bx[2]));
        let b4 = [bx[0] - pad, bx[1] + pad, bx[2] - pad, bx[3] + pad];
        let mut c = ChartBuilder::on(area)
            .caption(format!("{ds} · {act}"), ("sans-serif", 15))
            .margin(6)
            .build_cartesian_2d(b4[0]..b4[1], b4[2]..b4[3])
            .map_err(err)?;
        c.configure_mesh().disable_mesh().disable_axes().draw().map_err(err)?;
        c.draw_series(std::iter::once(Rectangle::new(
            [(b4[0], b4[2]), (b4[1], b4[3])],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
        let x = floats(&art["x"]);
        let labels: Vec<usize> = art["labels"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_u64().map(|u| u as usize)).collect())
            .unwrap_or_default();
        c.draw_series(x.chunks(2).enumerate().map(|(n, p)| {
            let col = labels.get(n).map_or(RGBColor(170, 170, 170), |&l| {
                let base = PALETTE[(l + 7) % 10];
                RGBColor(
                    ((base.0 as u16 + 2 * 255) / 3) as u8,
                    ((base.1 as u16 + 2 * 255) / 3) as u8,
                    ((base.2 as u16 + 2 * 255) / 3) as u8,
                )
            });
            Circle::new((p[0], p[1]), 2, col.filled())
        }))
        .map_err(err)?;
        let (w, b) = (floats(&art["w"]), floats(&art["b"]));
        for (j, bj) in b.iter().enumerate() {
            if let Some(seg) = clip((w[2 * j], w[2 * j + 1]), *bj, b4) {
                c.draw_series(LineSeries::new(seg.to_vec(), PALETTE[j % 10].stroke_width(2)))
                    .map_err(err)?;
            }
        }
    }
    root.present().map_err(err)
}

/// One panel of [`line_panels`]: named series of `(x, y)` points.
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// `(name, points)`; the same name gets the same colour in every panel.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Twenty distinguishable colours (the ten above, then darker and lighter variants).
fn colour(i: usize) -> RGBColor {
    let base = PALETTE[i % 10];
    match (i / 10) % 2 {
        0 => base,
        _ => RGBColor(base.0 / 2, base.1 / 2, base.2 / 2),
    }
}

/// Line plots in a grid of up to three columns, one colour per series name, and a legend in
/// a cell of its own.
pub fn line_panels(panels: &[Panel], path: &Path) -> Result<(), String> {
    fonts();
    let cells = panels.len() + 1;
    let cols = cells.clamp(1, 3);
    let rows = cells.div_ceil(cols).max(1);
    let (pw, ph) = (460u32, 340u32);
    let root = SVGBackend::new(path, (pw * cols as u32, ph * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((rows, cols));
    let mut names: Vec<String> = Vec::new();
    for p in panels {
        for (n, _) in &p.series {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    for (p, area) in panels.iter().zip(&areas) {
        let pts: Vec<(f64, f64)> = p
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if pts.is_empty() {
            continue;
        }
        let (mut x0, mut x1, mut y0, mut y1) =
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for (x, y) in &pts {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        let (dx, dy) = ((x1 - x0).max(1e-9), (y1 - y0).max(1e-9));
        let mut c = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(x0 - 0.02 * dx..x1 + 0.02 * dx, y0 - 0.05 * dy..y1 + 0.05 * dy)
            .map_err(err)?;
        c.configure_mesh()
            .x_desc(p.x_label.as_str())
            .light_line_style(WHITE)
            .draw()
            .map_err(err)?;
        for (name, v) in &p.series {
            let col = colour(names.iter().position(|n| n == name).unwrap_or(0));
            c.draw_series(LineSeries::new(
                v.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()),
                col.stroke_width(2),
            ))
            .map_err(err)?;
            if v.len() <= 12 {
                c.draw_series(v.iter().map(|&(x, y)| Circle::new((x, y), 3, col.filled())))
                    .map_err(err)?;
            }
        }
    }
    // The legend: one coloured line and name per series, in the cell after the panels.
    if let Some(area) = areas.get(panels.len()) {
        for (i, n) in names.iter().enumerate() {
            let y = 20 + 22 * i as i32;
            let col = colour(i);
            area.draw(&PathElement::new(vec![(20, y), (60, y)], col.stroke_width(3)))
                .map_err(err)?;
            area.draw(&Text::new(n.clone(), (70, y - 8), ("sans-serif", 16))).map_err(err)?;
        }
    }
    root.present().map_err(err)
}
