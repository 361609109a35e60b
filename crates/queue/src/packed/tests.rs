//! Tests of the packed virtqueue.
