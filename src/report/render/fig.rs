//! Figure attributes: the machine-checkable side of every number the HTML
//! prints (see the module documentation for the scheme).

use std::fmt::Write;

use crate::domain::Interval;

use super::common::{escape, human, machine, Kind};

/// One printed figure and its key, as in the CSV.
#[derive(Clone, Debug)]
pub(super) struct Fig {
    section: &'static str,
    theme: Option<String>,
    segment: Option<String>,
    bucket: Option<String>,
    metric: String,
    kind: Kind,
    /// `None`: a score without an estimate; the element prints its n.
    value: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    n: Option<u64>,
    significant: Option<bool>,
}

impl Fig {
    pub(super) fn new(section: &'static str, metric: &str, kind: Kind, value: f64) -> Fig {
        Fig {
            section,
            theme: None,
            segment: None,
            bucket: None,
            metric: metric.to_string(),
            kind,
            value: Some(value),
            low: None,
            high: None,
            n: None,
            significant: None,
        }
    }

    /// A score without an estimate: only its sample size (0 or more).
    pub(super) fn missing(section: &'static str, metric: &str, n: u64) -> Fig {
        Fig {
            value: None,
            ..Fig::new(section, metric, Kind::Score, 0.0).n(n)
        }
    }

    pub(super) fn count(section: &'static str, metric: &str, value: u64) -> Fig {
        Fig::new(section, metric, Kind::Count, value as f64)
    }

    /// The estimate of an interval, with its bounds.
    pub(super) fn interval(section: &'static str, metric: &str, interval: &Interval) -> Fig {
        Fig::new(section, metric, Kind::Score, interval.value).bounds(interval.low, interval.high)
    }

    pub(super) fn theme(mut self, id: &str) -> Fig {
        self.theme = Some(id.to_string());
        self
    }

    pub(super) fn segment(mut self, value: &str) -> Fig {
        self.segment = Some(value.to_string());
        self
    }

    pub(super) fn bucket(mut self, key: String) -> Fig {
        self.bucket = Some(key);
        self
    }

    pub(super) fn bounds(mut self, low: f64, high: f64) -> Fig {
        self.low = Some(low);
        self.high = Some(high);
        self
    }

    pub(super) fn n(mut self, n: u64) -> Fig {
        self.n = Some(n);
        self
    }

    pub(super) fn significant(mut self, significant: bool) -> Fig {
        self.significant = Some(significant);
        self
    }

    /// The attributes, each with a leading space.
    pub(super) fn attrs(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            " data-section=\"{}\" data-metric=\"{}\"",
            self.section,
            escape(&self.metric)
        );
        if let Some(theme) = &self.theme {
            let _ = write!(out, " data-theme=\"{}\"", escape(theme));
        }
        if let Some(segment) = &self.segment {
            let _ = write!(out, " data-segment=\"{}\"", escape(segment));
        }
        if let Some(bucket) = &self.bucket {
            let _ = write!(out, " data-bucket=\"{}\"", escape(bucket));
        }
        let bound_kind = if self.kind == Kind::Count {
            Kind::Score
        } else {
            self.kind
        };
        for (name, kind, value) in [
            ("value", self.kind, self.value),
            ("low", bound_kind, self.low),
            ("high", bound_kind, self.high),
        ] {
            if let Some(text) = value.and_then(|v| machine(kind, v)) {
                let _ = write!(out, " data-{name}=\"{text}\"");
            }
        }
        if let Some(n) = self.n {
            let _ = write!(out, " data-n=\"{n}\"");
        }
        if let Some(significant) = self.significant {
            let _ = write!(out, " data-significant=\"{significant}\"");
        }
        out
    }

    /// The figure as the reader sees it (the n of a missing score).
    pub(super) fn text(&self) -> String {
        match (self.value, self.n) {
            (Some(value), _) => human(self.kind, value),
            (None, Some(n)) => human(Kind::Count, n as f64),
            (None, None) => "n/a".into(),
        }
    }

    /// `<span class="fig" …>text</span>`; `text` is HTML.
    pub(super) fn span_with(&self, text: &str) -> String {
        format!("<span class=\"fig\"{}>{text}</span>", self.attrs())
    }

    /// `<span class="fig" …>value</span>`.
    pub(super) fn span(&self) -> String {
        self.span_with(&escape(&self.text()))
    }
}
