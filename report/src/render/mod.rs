//! The output formats. Each takes a filtered [`crate::profile::Profile`] (or its rows) and
//! writes one format.
//!
//! Bottom-up, each using only those above it in this list (and the crate's modules listed before
//! `render` in the crate docs):
//!
//! 1. [`xml`] — escaping text for SVG and HTML.
//! 2. [`text`], [`collapsed`], [`pprof`], [`graph`] — one format each, on their own.
//! 3. [`flame`] — the flame graph SVG, drawn from [`collapsed`]'s stacks.
//! 4. [`chart`] — the growth chart SVG.
//! 5. [`html`] — the page: the table, a flame graph drawn by the caller, and growth charts.

pub mod chart;
pub mod collapsed;
pub mod flame;
pub mod graph;
pub mod html;
pub mod pprof;
pub mod text;
pub mod xml;
