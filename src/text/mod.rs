//! Text every layer reads or writes, pure: hostile text made safe to show, the one duration
//! syntax, YAML as kubectl reads it.

pub mod duration;
pub mod excerpt;
pub mod yaml;
