//! Linux interface names, as the kernel accepts them (`dev_valid_name`):
//! 1-15 bytes, no '/', ':' or whitespace, not "." or "..". Shared by the
//! config (`ifName`, `bridge`, `uplink`) and the CNI environment (`CNI_IFNAME`);
//! each caller names its own field in front of the message.

/// Why a name is not a valid interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name \"{0}\" is longer than 15 bytes")]
    TooLong(String),
    #[error("interface name \"{0}\" is not allowed")]
    Reserved(String),
    #[error("interface name \"{0}\" contains '/', ':' or whitespace")]
    BadChar(String),
}

/// Checks `name` against the kernel's rules.
pub fn check(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::Empty);
    }
    if name.len() > 15 {
        return Err(Error::TooLong(name.into()));
    }
    if name == "." || name == ".." {
        return Err(Error::Reserved(name.into()));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::BadChar(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rules() {
        assert!(check("ros0").is_ok() && check("a-15-bytes-name").is_ok());
        assert_eq!(check(""), Err(Error::Empty));
        assert_eq!(
            check("sixteen-bytes-xx"),
            Err(Error::TooLong("sixteen-bytes-xx".into()))
        );
        assert_eq!(check(".."), Err(Error::Reserved("..".into())));
        for bad in ["a/b", "a:b", "a b", "a\tb"] {
            assert_eq!(check(bad), Err(Error::BadChar(bad.into())), "{bad}");
        }
    }
}
