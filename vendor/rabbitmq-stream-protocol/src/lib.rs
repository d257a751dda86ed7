#![allow(clippy::uninlined_format_args)]

pub mod codec;
pub mod commands;
pub mod error;
pub mod message;
mod protocol;
mod request;
mod response;
pub mod types;
pub use request::*;
pub use response::*;

pub mod utils;
