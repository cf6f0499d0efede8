/// Progress of a build, for a UI to show. Library code never draws anything itself. The
/// sources report through the [`strata_source::Reporter`] part (downloads, packages fetched,
/// scripts run).
pub trait Reporter: strata_source::Reporter {
    /// A new phase started (`resolving sources`, ...).
    fn phase(&self, _what: &str) {}
    /// The plan is known: `layers` layers holding `bytes` bytes of content.
    fn layers_planned(&self, _layers: usize, _bytes: u64) {}
    /// Layer `index` (from 1) holding `bytes` of content is ready; `cached` if it was
    /// already in the store.
    fn layer_done(&self, _index: usize, _bytes: u64, _cached: bool) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;

impl strata_source::Reporter for NoReporter {}

impl Reporter for NoReporter {}
