//! The query service: `contrail.v1.Contrail` over tonic, with gRPC health checking and
//! server reflection. Live data comes from [`store::LiveStore`] (fed by the output topics,
//! see [`feed`]); `Query` runs read-only SQL with DataFusion over the Parquet archive.

pub mod counting;
pub mod feed;
mod service;
pub mod sql;
pub mod store;

/// Code generated from `proto/contrail.proto` (it stays in this module).
pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("contrail.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/contrail_descriptor.bin"));
}

pub use service::{GrpcServer, QueryLimits, QueryService};
