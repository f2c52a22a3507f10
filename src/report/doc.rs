//! The report as a list of blocks (headings, paragraphs, tables, figures), rendered to
//! Markdown and to self-contained HTML from the same blocks, so the two never disagree.

use base64::Engine;

/// One piece of a report.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A heading of level 1–3.
    Heading(u8, String),
    /// A paragraph; `code` spans and **bold** are the only markup.
    Para(String),
    /// A bulleted list.
    Bullets(Vec<String>),
    /// A table.
    Table(Table),
    /// A chart: `name.png` and `name.svg` next to the report.
    Figure {
        /// File stem.
        name: &'static str,
        /// Alternative text.
        alt: String,
    },
}

/// A table with a header row; cells are plain text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// Column names.
    pub header: Vec<String>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names and no rows.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }
}

/// `x` with `digits` significant digits (never in exponent form), e.g. 0.2113, 1.655, 1234.
pub fn sig(x: f64, digits: i32) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    // Below 1e-12 is the rounding of a difference (a step's DP comm read 1.388e-17 s), not a
    // quantity any report states.
    if x.abs() < 1e-12 {
        return "0".into();
    }
    let decimals = (digits - 1 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// `x` as a whole number with thousands separators, e.g. 1,234,567.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && s != "0" {
        out.insert(0, '-');
    }
    out
}

/// An amount (GPU-hours, dollars): [`thousands`] from 1,000 up, else three significant digits,
/// so that a small study does not read "0 GPU-hours, $0".
pub fn amount(x: f64) -> String {
    if x.abs() >= 1000.0 {
        thousands(x)
    } else {
        sig(x, 3)
    }
}

/// A large count in words-width: 131B, 300B, 1.2T, 45M (three significant digits, no
/// trailing zeros).
pub fn count(x: f64) -> String {
    let (v, unit) = match x.abs() {
        a if a >= 1e12 => (x / 1e12, "T"),
        a if a >= 1e9 => (x / 1e9, "B"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "K"),
        _ => (x, ""),
    };
    let mut s = sig(v, 3);
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s + unit
}

/// `x` as a percentage with one decimal, e.g. 97.3%.
pub fn pct(x: f64) -> String {
    crate::units::fmt_pct(x)
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The blocks as GitHub-flavoured Markdown.
pub fn markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Heading(l, t) => {
                out += &format!("{} {t}\n\n", "#".repeat(*l as usize));
            }
            Block::Para(t) => out += &format!("{t}\n\n"),
            Block::Bullets(items) => {
                for i in items {
                    out += &format!("- {i}\n");
                }
                out.push('\n');
            }
            Block::Table(t) => {
                let line = |cells: &[String]| {
                    let cells: Vec<String> = cells.iter().map(|c| md_cell(c)).collect();
                    format!("| {} |\n", cells.join(" | "))
                };
                out += &line(&t.header);
                out += &format!("|{}\n", "---|".repeat(t.header.len()));
                for r in &t.rows {
                    out += &line(r);
                }
                out.push('\n');
            }
            Block::Figure { name, alt } => {
                out += &format!("![{alt}]({name}.png)\n\n(vector: [{name}.svg]({name}.svg))\n\n");
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escapes `s` for HTML and turns `code` and **bold** into their tags.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let (mut code, mut bold) = (false, false);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("**") && !code {
            out += if bold { "</strong>" } else { "<strong>" };
            bold = !bold;
            rest = &rest[2..];
        } else if c == '`' {
            out += if code { "</code>" } else { "<code>" };
            code = !code;
            rest = &rest[1..];
        } else {
            out += &escape(&c.to_string());
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out += "</code>";
    }
    if bold {
        out += "</strong>";
    }
    out
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;max-width:1180px;\
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.88em}\
th,td{border:1px solid #bbb;padding:3px 7px;text-align:left}\
th{background:#eee}tr:nth-child(even){background:#f8f8f8}\
code{background:#f2f2f2;padding:0 3px}img{max-width:100%;border:1px solid #ddd}\
figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}";

/// The blocks as one self-contained HTML page: `png(name)` gives each figure's PNG bytes,
/// inlined as a base64 data URI.
pub fn html(title: &str, blocks: &[Block], png: &dyn Fn(&str) -> Option<Vec<u8>>) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(title)
    );
    for b in blocks {
        match b {
            Block::Heading(l, t) => out += &format!("<h{l}>{}</h{l}>\n", inline(t)),
            Block::Para(t) => out += &format!("<p>{}</p>\n", inline(t)),
            Block::Bullets(items) => {
                out += "<ul>\n";
                for i in items {
                    out += &format!("<li>{}</li>\n", inline(i));
                }
                out += "</ul>\n";
            }
            Block::Table(t) => {
                out += "<table>\n<tr>";
                for h in &t.header {
                    out += &format!("<th>{}</th>", inline(h));
                }
                out += "</tr>\n";
                for r in &t.rows {
                    out += "<tr>";
                    for c in r {
                        out += &format!("<td>{}</td>", inline(c));
                    }
                    out += "</tr>\n";
                }
                out += "</table>\n";
            }
            Block::Figure { name, alt } => {
                let src = png(name).map_or(format!("{name}.png"), |bytes| {
                    format!(
                        "data:image/png;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(bytes)
                    )
                });
                out += &format!(
                    "<figure><img src=\"{src}\" alt=\"{}\"><figcaption>{} \
                     (vector: <a href=\"{name}.svg\">{name}.svg</a>)</figcaption></figure>\n",
                    escape(alt),
                    escape(alt)
                );
            }
        }
    }
    out + "</body>\n</html>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits_never_use_exponents() {
        assert_eq!(sig(0.211_34, 4), "0.2113");
        assert_eq!(sig(1.6549, 4), "1.655");
        assert_eq!(sig(12.345, 4), "12.35");
        assert_eq!(sig(123_456.7, 4), "123457");
        assert_eq!(sig(0.0, 4), "0");
        // Rounding noise of a difference is 0, not 0.00000000000000001388.
        assert_eq!(sig(1.388e-17, 4), "0");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(amount(1_234_567.4), "1,234,567");
        assert_eq!(amount(443.2), "443");
        assert_eq!(amount(0.18), "0.180");
        assert_eq!(amount(0.00018), "0.000180");
        assert_eq!(pct(0.9734), "97.3%");
        assert_eq!(count(131e9), "131B");
        assert_eq!(count(300e9), "300B");
        assert_eq!(count(1.25e12), "1.25T");
        assert_eq!(count(2.0e9), "2B");
    }

    #[test]
    fn markdown_and_html_carry_the_same_table() {
        let mut t = Table::new(&["plan", "step (s)"]);
        t.row(vec!["dp=2 | tp=1".into(), "0.5".into()]);
        let blocks = vec![
            Block::Heading(2, "Scaling".into()),
            Block::Para("uses `dp` & **bold**".into()),
            Block::Table(t),
        ];
        let md = markdown(&blocks);
        assert!(md.contains("## Scaling\n"));
        assert!(md.contains("| plan | step (s) |\n|---|---|\n| dp=2 \\| tp=1 | 0.5 |\n"));
        let h = html("t", &blocks, &|_| None);
        assert!(h.contains("<p>uses <code>dp</code> &amp; <strong>bold</strong></p>"));
        assert!(h.contains("<td>dp=2 | tp=1</td><td>0.5</td>"));
    }
}
