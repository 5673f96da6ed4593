//! The kernel layer: small modules that each own one kind of kernel object
//! and know nothing of pods, the agent or the plugin. (It grows into the one
//! kernel layer of issue 13; today it holds packet sockets.)

pub mod packet;
