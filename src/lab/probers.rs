//! Which prober the lab uses. The one place that knows every [`Prober`]:
//! the probers import the trait from [`super::probe`], and this module
//! imports them, so no prober module depends on another.

use super::probe::{in_path, Ddsperf, Prober, Unavailable};
use super::spdp_probe::SpdpProber;

/// The prober the lab uses: the first one whose tools are here, or what to
/// install. A new prober goes into this list (the built-in one last, as the
/// fallback that needs nothing).
pub fn select_prober() -> std::result::Result<Box<dyn Prober>, Unavailable> {
    if in_path("ddsperf") && in_path("timeout") && super::probe::have_ddsperf() {
        return Ok(Box::new(Ddsperf::for_lab()));
    }
    // no Cyclone DDS here: the lab's own SPDP announcer/listener
    Ok(Box::new(SpdpProber))
}

/// The lab's own SPDP prober even where ddsperf exists (`lab --prober spdp`).
pub fn spdp_prober() -> Box<dyn Prober> {
    Box::new(SpdpProber)
}
