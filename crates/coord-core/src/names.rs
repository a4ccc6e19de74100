//! Validation of primitive names, shared by every primitive.

use crate::error::{Error, Result};

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// Checks a name and returns its key prefix, `name + "/"`.
///
/// Names are arbitrary bytes (etcd keys are bytes, and Go peers may use any), non-empty and at
/// most [`MAX_NAME_LEN`] long. The trailing `/` keeps `a` and `ab` apart; a name that is
/// another name followed by `/` (`a` and `a/b`) shares its key space, so avoid that.
pub(crate) fn name_prefix(name: &[u8]) -> Result<Vec<u8>> {
    if name.is_empty() {
        return Err(Error::invalid("name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "name is {} bytes, longer than {MAX_NAME_LEN}",
            name.len()
        )));
    }
    let mut prefix = Vec::with_capacity(name.len() + 1);
    prefix.extend_from_slice(name);
    prefix.push(b'/');
    Ok(prefix)
}

/// The session's key under `prefix`: the lease id in lowercase hex, as Go's package writes it.
pub(crate) fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}
