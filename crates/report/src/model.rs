//! The report's data model: sections of paragraphs, tables, charts and code, serializable so a run
//! can keep `report.json` next to the rendered HTML and Markdown.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    pub subtitle: String,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub heading: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Block {
    Paragraph { text: String },
    Table(Table),
    LineChart(LineChart),
    IntervalChart(IntervalChart),
    Code { language: String, text: String },
}

impl Block {
    pub fn paragraph(text: impl Into<String>) -> Self {
        Block::Paragraph { text: text.into() }
    }

    pub fn code(language: impl Into<String>, text: impl Into<String>) -> Self {
        Block::Code {
            language: language.into(),
            text: text.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub caption: Option<String>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cell {
    Text {
        text: String,
    },
    /// Shown with `digits` decimals.
    Number {
        #[serde(deserialize_with = "non_finite::f64")]
        value: f64,
        digits: usize,
    },
    /// A point estimate with its confidence interval, shown as `0.812 [0.760, 0.861]`.
    Estimate {
        #[serde(deserialize_with = "non_finite::f64")]
        value: f64,
        #[serde(deserialize_with = "non_finite::f64")]
        low: f64,
        #[serde(deserialize_with = "non_finite::f64")]
        high: f64,
        digits: usize,
    },
}

impl Cell {
    pub fn text(text: impl Into<String>) -> Self {
        Cell::Text { text: text.into() }
    }

    pub fn number(value: f64, digits: usize) -> Self {
        Cell::Number { value, digits }
    }

    pub fn estimate(value: f64, low: f64, high: f64, digits: usize) -> Self {
        Cell::Estimate {
            value,
            low,
            high,
            digits,
        }
    }

    /// The cell as plain text, the same in HTML and Markdown (before escaping).
    pub fn display(&self) -> String {
        match self {
            Cell::Text { text } => text.clone(),
            Cell::Number { value, digits } => crate::format::fixed(*value, *digits),
            Cell::Estimate {
                value,
                low,
                high,
                digits,
            } => format!(
                "{} [{}, {}]",
                crate::format::fixed(*value, *digits),
                crate::format::fixed(*low, *digits),
                crate::format::fixed(*high, *digits)
            ),
        }
    }

    /// Numbers read best right-aligned, so their decimal points line up.
    pub(crate) fn is_numeric(&self) -> bool {
        !matches!(self, Cell::Text { .. })
    }
}

/// Curves over a shared x axis (loss or a metric against steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineChart {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    #[serde(deserialize_with = "non_finite::points")]
    pub points: Vec<(f64, f64)>,
}

/// One chart per measure: each item a point estimate with a confidence interval, drawn as a bar or dot with an error bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalChart {
    pub id: String,
    pub title: String,
    pub y_label: String,
    pub items: Vec<Interval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub label: String,
    #[serde(deserialize_with = "non_finite::f64")]
    pub value: f64,
    #[serde(deserialize_with = "non_finite::f64")]
    pub low: f64,
    #[serde(deserialize_with = "non_finite::f64")]
    pub high: f64,
}

/// JSON has no NaN or infinity: serde_json writes them as `null`, and these read `null` back as NaN,
/// so a report with a missing value still round-trips through `report.json`.
mod non_finite {
    use serde::{Deserialize, Deserializer};

    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub fn points<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let raw = Vec::<(Option<f64>, Option<f64>)>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(x, y)| (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN)))
            .collect())
    }
}
