//! Capabilities (CAP_ID_LIST_QUERY, DEVICE_CAP_GET, DRIVER_CAP_SET) and device-parts resource
//! objects (RESOURCE_OBJ_CREATE, MODIFY, QUERY, DESTROY); spec-decisions §17.
//!
//! Object ids are the owner's, one space for GET and SET objects: an id is valid below the
//! sum of the two limits the driver set, and each type holds at most its own limit.

use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::admin::{qualifier, status};
use virtio_lm_spec::parts::{
    CapIdData, DevPartsCap, DevPartsObj, ResourceObjHdr, DEV_PARTS_CAP, DEV_PARTS_TYPE_GET,
    DEV_PARTS_TYPE_SET, RESOURCE_OBJ_DEV_PARTS, STATUS_EEXIST,
};
use zerocopy::{FromBytes, IntoBytes};

use super::{einval, Object, PartsState, DEVICE_GET_LIMIT, DEVICE_SET_LIMIT};
use crate::admin::decode::{AdminCommand, AdminResult};

/// The command data as `T` (missing bytes read as 0, excess ignored: the framework's rule).
pub(crate) fn data<T: FromBytes>(cmd: &AdminCommand) -> T {
    let mut bytes = vec![0u8; size_of::<T>()];
    let n = cmd.data.len().min(bytes.len());
    bytes[..n].copy_from_slice(&cmd.data[..n]);
    T::read_from_bytes(&bytes).unwrap_or_else(|_| T::new_zeroed())
}

fn field() -> AdminResult {
    einval(qualifier::Q_INVALID_FIELD)
}

pub(crate) fn missing() -> AdminResult {
    AdminResult::error(status::ENXIO, qualifier::Q_INVALID_FIELD)
}

pub(crate) fn busy() -> AdminResult {
    AdminResult::error(status::EBUSY, qualifier::Q_INVALID_COMMAND)
}

impl PartsState {
    pub(super) fn capability(&mut self, op: u16, cmd: &AdminCommand) -> AdminResult {
        let id = data::<CapIdData>(cmd).id.get();
        match op {
            v1_4::CAP_ID_LIST_QUERY => {
                AdminResult::ok((1u64 << DEV_PARTS_CAP).to_le_bytes().to_vec())
            }
            _ if id != DEV_PARTS_CAP => field(),
            v1_4::DEVICE_CAP_GET => {
                let cap = DevPartsCap {
                    get_parts_resource_objects_limit: DEVICE_GET_LIMIT,
                    set_parts_resource_objects_limit: DEVICE_SET_LIMIT,
                };
                AdminResult::ok(cap.as_bytes().to_vec())
            }
            _ => {
                let bytes = cmd.data.get(size_of::<CapIdData>()..).unwrap_or_default();
                let mut raw = [0u8; 2];
                let n = bytes.len().min(2);
                raw[..n].copy_from_slice(&bytes[..n]);
                let [get, set] = raw;
                if get > DEVICE_GET_LIMIT || set > DEVICE_SET_LIMIT {
                    return field();
                }
                // "The driver MUST NOT change the capability while such objects exist".
                if !self.objects.is_empty() && (get, set) != self.cap {
                    return busy();
                }
                self.cap = (get, set);
                AdminResult::ok(Vec::new())
            }
        }
    }

    fn count(&self, kind: u8) -> usize {
        self.objects.values().filter(|o| o.kind == kind).count()
    }

    fn limit(&self, kind: u8) -> usize {
        usize::from(if kind == DEV_PARTS_TYPE_GET {
            self.cap.0
        } else {
            self.cap.1
        })
    }

    pub(super) fn object(&mut self, op: u16, cmd: &AdminCommand) -> AdminResult {
        let hdr = data::<ResourceObjHdr>(cmd);
        if hdr.obj_type.get() != RESOURCE_OBJ_DEV_PARTS {
            return field();
        }
        let id = hdr.id.get();
        let member = cmd.group_member_id;
        let existing = self
            .objects
            .get(&id)
            .copied()
            .filter(|o| o.member == member);
        let kind = {
            let tail = cmd.data.get(16..).unwrap_or_default();
            DevPartsObj::read_from_prefix(tail).map_or(0, |(o, _)| o.obj_type)
        };
        match op {
            v1_4::RESOURCE_OBJ_CREATE => {
                if kind != DEV_PARTS_TYPE_GET && kind != DEV_PARTS_TYPE_SET {
                    return field();
                }
                let ids = u32::from(self.cap.0) + u32::from(self.cap.1);
                if id >= ids {
                    return field();
                }
                if self.objects.contains_key(&id) && !self.defects.accept_duplicate_id {
                    return AdminResult::error(STATUS_EEXIST, qualifier::Q_INVALID_FIELD);
                }
                if self.count(kind) >= self.limit(kind) {
                    return AdminResult::error(status::ENOSPC, qualifier::Q_NORESOURCE);
                }
                self.objects.insert(id, Object { member, kind });
                AdminResult::ok(Vec::new())
            }
            v1_4::RESOURCE_OBJ_MODIFY => {
                let Some(object) = existing else {
                    return missing();
                };
                if kind != DEV_PARTS_TYPE_GET && kind != DEV_PARTS_TYPE_SET {
                    return field();
                }
                if kind != object.kind && self.count(kind) >= self.limit(kind) {
                    return AdminResult::error(status::ENOSPC, qualifier::Q_NORESOURCE);
                }
                self.objects.insert(id, Object { member, kind });
                AdminResult::ok(Vec::new())
            }
            v1_4::RESOURCE_OBJ_QUERY => match existing {
                // "QUERY MUST return the data of the last CREATE or MODIFY".
                Some(object) => {
                    let obj = DevPartsObj {
                        obj_type: object.kind,
                        reserved: [0; 7],
                    };
                    AdminResult::ok(obj.as_bytes().to_vec())
                }
                None => missing(),
            },
            _ => {
                if existing.is_none() {
                    return missing();
                }
                self.objects.remove(&id);
                // No other object depends on a device-parts object, so DESTROY never answers
                // EBUSY; parts staged through the member stay staged until it resumes.
                AdminResult::ok(Vec::new())
            }
        }
    }
}
