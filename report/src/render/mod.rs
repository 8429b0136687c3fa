//! The output formats. Each takes a filtered [`crate::profile::Profile`] and writes one format;
//! the graph, flame graph, pprof and HTML outputs of the design slot in here beside them.

pub mod collapsed;
pub mod text;
