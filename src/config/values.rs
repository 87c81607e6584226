//! The values of settings: how each type is read from a flag or a
//! variable, written into the config file and shown back, and where a value
//! came from ([`Origin`]), to name it in words its source would recognize
//! when it is wrong.

use std::ffi::OsString;
use std::num::IntErrorKind;
use std::path::PathBuf;

use super::ConfigError;
use crate::cluster::settings::redacted;

/// A setting's type: read from a flag's or a variable's text, written into
/// the generated file, and shown back to the user as they would type it.
pub(super) trait SettingValue: Clone + Send + Sync + 'static {
    /// The value `text` spells, or why it spells none, in plain words.
    fn parse(text: &str) -> Result<Self, String>;
    /// As written in the TOML file.
    fn toml(&self) -> String;
    /// As typed on a command line or in a variable.
    fn text(&self) -> String;
}

impl SettingValue for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn toml(&self) -> String {
        format!("{self:?}")
    }

    fn text(&self) -> String {
        self.clone()
    }
}

impl SettingValue for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        }
    }

    fn toml(&self) -> String {
        self.to_string()
    }

    fn text(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }

    fn toml(&self) -> String {
        format!("{:?}", self.display().to_string())
    }

    fn text(&self) -> String {
        self.display().to_string()
    }
}

/// Unsigned integers: every number setting is a count or a duration, so a
/// negative value gets the same plain reason as a word.
macro_rules! whole_number {
    ($($ty:ty),+) => {$(
        impl SettingValue for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
                    IntErrorKind::PosOverflow => format!("must be at most {}", <$ty>::MAX),
                    _ => "must be a whole number, 0 or more".to_owned(),
                })
            }

            fn toml(&self) -> String {
                self.to_string()
            }

            fn text(&self) -> String {
                self.to_string()
            }
        }
    )+};
}

whole_number!(u64, usize);

/// The flag of the setting `key`, parsed with its type's reasons and
/// accepting a negative number as a value (to refuse it in those words
/// rather than as an unknown flag).
pub(super) fn setting_arg<T: SettingValue>(
    key: &'static str,
    env: &str,
    doc: &str,
    default: &T,
) -> clap::Arg {
    let default = match default.text() {
        text if text.is_empty() => "empty".to_owned(),
        text => text,
    };
    clap::Arg::new(key)
        .long(flag_name(key))
        .value_name(key.to_uppercase())
        .value_parser(T::parse)
        .allow_negative_numbers(true)
        .help(format!("{} [default: {default}] [env: {env}]", doc.trim()))
}

/// `max_frame_size` as a flag: `max-frame-size`.
pub(super) fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

/// The variable `name` for the setting `key`, if it is set.
pub(super) fn read_var<T: SettingValue>(
    var: &impl Fn(&str) -> Option<OsString>,
    key: &str,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = var(name) else {
        return Ok(None);
    };
    let text = value.into_string().map_err(|value| {
        ConfigError::Invalid(format!(
            "{name}={}: not valid UTF-8",
            value.to_string_lossy()
        ))
    })?;
    T::parse(&text)
        .map(Some)
        .map_err(|reason| Origin::Env(name).invalid(key, &text, &reason))
}

/// Where a setting's value was given.
#[derive(Debug, Clone, Default)]
pub(super) enum Origin {
    /// Built in, or set by code that made the [`Settings`] itself.
    #[default]
    Default,
    File(PathBuf),
    /// The variable of that name.
    Env(&'static str),
    Flag,
}

impl Origin {
    /// `value` of `key` is wrong for `reason`, said in the words of where
    /// it was given.
    pub(super) fn invalid<T: SettingValue>(
        &self,
        key: &str,
        value: &T,
        reason: &str,
    ) -> ConfigError {
        let (toml, text) = match key {
            "secret" => ("\"…\"".to_owned(), "…".to_owned()),
            _ => {
                let text = redacted(&value.text());
                match value.toml() {
                    quoted if quoted.starts_with('"') => (format!("{text:?}"), text),
                    toml => (toml, text),
                }
            }
        };
        ConfigError::Invalid(match self {
            Origin::Default => format!("invalid setting {key} = {toml}: {reason}"),
            Origin::File(path) => format!(
                "invalid config file {}: {key} = {toml}: {reason}",
                path.display()
            ),
            Origin::Env(name) => format!("{name}={text}: {reason}"),
            Origin::Flag => format!("invalid value {toml} for --{}: {reason}", flag_name(key)),
        })
    }

    /// Who set `key`, for a message about two settings.
    pub(super) fn set_by(&self, key: &str) -> String {
        match self {
            Origin::Default => "the default".to_owned(),
            Origin::File(path) => format!("set in {}", path.display()),
            Origin::Env(name) => format!("set by {name}"),
            Origin::Flag => format!("set by --{}", flag_name(key)),
        }
    }
}
