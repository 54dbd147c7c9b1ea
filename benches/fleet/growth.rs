//! How each side's cost grows with N, from the side-by-side figures: a table for the report and
//! a PNG of the same numbers (plotters on an in-memory bitmap, DejaVu Sans from the `dejavu`
//! crate so that no system font is needed, encoded with the `png` crate). The figures of
//! earlier runs can join them (`--growth-from`: the growth tables of their reports), so that
//! sizes measured in separate runs make one table and one plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::MIB;
use crate::eso::{PeerReport, Side};

/// One side's costs at one N, per credential or per rotation.
pub struct Cost {
    n: usize,
    side: Side,
    requests_per_lifetime: f64,
    writes_per_rotation: f64,
    cpu_ms_per_created: f64,
    cpu_ms_per_rotation: f64,
    rss_steady_mib: f64,
    rss_rotating_mib: f64,
}

impl Cost {
    fn of(r: &PeerReport) -> Cost {
        let rotations = r.soak_writes.get("secrets").copied().unwrap_or(0).max(1) as f64;
        let lifetimes = (r.n as f64 * r.soak_s / r.ttl_s.max(1) as f64).max(1.0);
        Cost {
            n: r.n,
            side: r.side.unwrap(),
            requests_per_lifetime: r.soak.total() as f64 / lifetimes,
            writes_per_rotation: r.soak_writes.values().sum::<u64>() as f64 / rotations,
            cpu_ms_per_created: r.cpu_creation_s * 1000.0 / r.n as f64,
            cpu_ms_per_rotation: r.cpu_rotation_s * 1000.0 / rotations,
            rss_steady_mib: r.rss_steady_kib as f64 / MIB,
            rss_rotating_mib: r.rss_rotation_peak_kib as f64 / MIB,
        }
    }

    /// RSS above what the same side needs at the smallest N, per credential more (KiB).
    fn marginal_kib(&self, smallest: Option<&Cost>) -> Option<f64> {
        let s = smallest.filter(|s| s.n < self.n)?;
        Some((self.rss_steady_mib - s.rss_steady_mib) * MIB / (self.n - s.n) as f64)
    }
}

/// This run's costs, then those of `earlier` runs at a side and N this run did not measure;
/// ordered by side, then N.
pub fn costs(reports: &[PeerReport], earlier: Vec<Cost>) -> Vec<Cost> {
    let mut costs: Vec<Cost> = reports
        .iter()
        .filter(|r| r.n > 0 && r.side.is_some())
        .map(Cost::of)
        .collect();
    for cost in earlier {
        if !costs.iter().any(|c| c.side == cost.side && c.n == cost.n) {
            costs.push(cost);
        }
    }
    costs.sort_by_key(|c| (c.side != Side::Ours, c.n));
    costs
}

/// The rows of the growth table in an earlier report (as [`table`] writes it).
pub fn parse_table(report: &str) -> Result<Vec<Cost>, String> {
    let mut costs = Vec::new();
    let rows = report
        .split("## How cost grows with N")
        .nth(1)
        .ok_or("no growth table")?;
    for line in rows.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let side = match cells[0] {
            "operator" => Side::Ours,
            "ESO" => Side::Eso,
            _ => continue,
        };
        let [
            _,
            n,
            requests,
            writes,
            created,
            rotation,
            steady,
            _,
            rotating,
        ] = cells[..]
        else {
            return Err(format!("a row of {} cells: {line}", cells.len()));
        };
        let number = |cell: &str| -> Result<f64, String> {
            cell.replace(',', "")
                .parse()
                .map_err(|_| format!("not a number: {cell:?} in {line}"))
        };
        costs.push(Cost {
            n: number(n)? as usize,
            side,
            requests_per_lifetime: number(requests)?,
            writes_per_rotation: number(writes)?,
            cpu_ms_per_created: number(created)?,
            cpu_ms_per_rotation: number(rotation)?,
            rss_steady_mib: number(steady)?,
            rss_rotating_mib: number(rotating)?,
        });
    }
    Ok(costs)
}

/// The growth table: a row per side and N.
pub fn table(costs: &[Cost]) -> String {
    let mut out = String::new();
    if costs.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n## How cost grows with N\n");
    let _ = writeln!(
        out,
        "| side | N | NetSapiens requests per token lifetime, per credential | Kubernetes writes per rotation | CPU-ms per credential created | CPU-ms per rotation | RSS steady (MiB) | RSS per credential more than at the smallest N (KiB) | RSS peak while rotating (MiB) |\n|---|---|---|---|---|---|---|---|---|"
    );
    for c in costs {
        let smallest = costs
            .iter()
            .filter(|s| s.side == c.side)
            .min_by_key(|s| s.n);
        let marginal = c
            .marginal_kib(smallest)
            .map_or_else(|| "–".to_owned(), |k| format!("{k:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {marginal} | {:.1} |",
            c.side.name(),
            c.n,
            c.requests_per_lifetime,
            c.writes_per_rotation,
            c.cpu_ms_per_created,
            c.cpu_ms_per_rotation,
            c.rss_steady_mib,
            c.rss_rotating_mib,
        );
    }
    out
}

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;

/// Draws the growth plot (four panels, N on a log scale, a line per side) into `path`.
pub fn plot(costs: &[Cost], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if costs.is_empty() {
        return Ok(());
    }
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the DejaVu Sans font did not load")?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(40);
        title.titled(
            "nsapi-token-operator and External Secrets Operator: cost by number of credentials",
            ("sans-serif", 22),
        )?;
        let panels = body.split_evenly((2, 2));
        type Metric = fn(&Cost) -> f64;
        let metrics: [(&str, Metric); 4] = [
            ("RSS steady (MiB)", |c| c.rss_steady_mib),
            ("CPU-ms per credential created", |c| c.cpu_ms_per_created),
            (
                "NetSapiens requests per token lifetime, per credential",
                |c| c.requests_per_lifetime,
            ),
            ("Kubernetes writes per rotation", |c| c.writes_per_rotation),
        ];
        let min_n = costs.iter().map(|c| c.n).min().unwrap() as f64;
        let max_n = costs.iter().map(|c| c.n).max().unwrap() as f64;
        for (area, (caption, metric)) in panels.iter().zip(metrics) {
            let top = costs.iter().map(metric).fold(0.0, f64::max) * 1.15;
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(
                    ((min_n / 1.5)..(max_n * 1.5)).log_scale(),
                    0.0..top.max(1e-3),
                )?;
            chart
                .configure_mesh()
                .x_desc("credentials (N, log scale)")
                // Powers of ten only: the minor labels between them overlapped near each.
                .x_label_formatter(&|n| {
                    let exponent = n.log10();
                    if (exponent - exponent.round()).abs() < 1e-6 {
                        format!("{n:.0}")
                    } else {
                        String::new()
                    }
                })
                .label_style(("sans-serif", 14))
                .draw()?;
            for (side, color) in [(Side::Ours, BLUE), (Side::Eso, RED)] {
                let points: Vec<(f64, f64)> = costs
                    .iter()
                    .filter(|c| c.side == side)
                    .map(|c| (c.n as f64, metric(c)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(side.name())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                )?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }
        root.present()?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&pixels)?;
    Ok(())
}
