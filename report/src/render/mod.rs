//! The output formats. Each takes a filtered [`crate::profile::Profile`] (or its rows) and
//! writes one format.

pub mod chart;
pub mod collapsed;
pub mod flame;
pub mod graph;
pub mod html;
pub mod pprof;
pub mod text;
