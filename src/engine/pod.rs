//! The parts of a Pod the engine reads, decoded in one pass, borrowing from the input.
//!
//! The engine needs names, annotations, labels, mount paths and which lists exist; decoding
//! the whole `k8s_openapi` Pod (managedFields, env, probes…) costs several times the rest of
//! a review. Everything read here is typed as strictly as in the Pod schema (a `containers`
//! that is not a list of named containers fails to decode), so every patch built from this
//! view applies; fields the engine does not read are skipped unchecked.

use std::borrow::Cow;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::text::excerpt::{bounded, Quoted};

/// A JSON object decoded as `T`. serde lets a struct be written as an array too; the Pod
/// schema does not, and a patch into an array where an object belongs would not apply.
#[derive(Debug)]
pub struct Obj<T>(pub T);

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(MapOnly(d)).map(Obj)
    }
}

/// Asks the inner deserializer for a map whatever the visitor would accept.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// A string borrowed from the input, owned only when it carries escapes. serde borrows a
/// `Cow<str>` field only when the field is exactly that type: inside an `Option`, or as a
/// map's key or value, every string would be copied.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// For `#[serde(deserialize_with)]` on an `Option<Cow<str>>` field: borrowed when it can be.
pub fn borrowed<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Text<'a>>::deserialize(d)?.map(|t| t.0))
}

/// String pairs of a JSON object, in input order (a repeated key: the last one counts, as
/// in Go's decoder).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StrMap<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> StrMap<'a> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = StrMap<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrMap<'a>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<Text<'a>, Text<'a>>()? {
                    out.push((k.0, v.0));
                }
                Ok(StrMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub annotations: Option<StrMap<'a>>,
    #[serde(borrow, default)]
    pub labels: Option<StrMap<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub mount_path: Cow<'a, str>,
}

/// The part of a pod's or container's `securityContext` that decides which user runs it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub volume_mounts: Option<Vec<Mount<'a>>>,
    #[serde(default)]
    pub security_context: Option<Obj<Security>>,
}

#[derive(Debug, Deserialize)]
pub struct Named<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    #[serde(borrow)]
    pub containers: Vec<Obj<Container<'a>>>,
    #[serde(borrow, default)]
    pub init_containers: Option<Vec<Named<'a>>>,
    #[serde(borrow, default)]
    pub ephemeral_containers: Option<Vec<Named<'a>>>,
    #[serde(borrow, default)]
    pub volumes: Option<Vec<Named<'a>>>,
    #[serde(default)]
    pub share_process_namespace: Option<bool>,
    #[serde(default)]
    pub security_context: Option<Obj<Security>>,
    #[serde(default)]
    pub automount_service_account_token: Option<bool>,
}

impl Spec<'_> {
    /// The uid every app container runs as, when the pod says so: each container's own
    /// `runAsUser`, else the pod's, all set and equal. `None` leaves it to the images.
    pub fn app_uid(&self) -> Option<i64> {
        let pod_uid = self.security_context.as_ref().and_then(|s| s.run_as_user);
        let mut uids = self.containers.iter().map(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .or(pod_uid)
        });
        let first = uids.next()??;
        uids.all(|u| u == Some(first)).then_some(first)
    }

    /// `spec.securityContext.runAsNonRoot: true`: the kubelet then refuses any container that
    /// would run as root and does not set `runAsNonRoot` itself.
    pub fn run_as_non_root(&self) -> bool {
        self.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root)
            .unwrap_or(false)
    }
}

/// What the engine knows of a pod.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub metadata: Option<Obj<Meta<'a>>>,
    #[serde(borrow, default)]
    pub spec: Option<Obj<Spec<'a>>>,
}

impl<'a> PodView<'a> {
    /// The view itself, if it does not name a kind other than a v1 Pod.
    pub fn check_type(self) -> Result<PodView<'a>, String> {
        let kind = self.kind.as_deref();
        let version = self.api_version.as_deref();
        if kind.is_some_and(|k| k != "Pod") || version.is_some_and(|v| v != "v1") {
            return Err(format!(
                "the object is a {}/{}, not a v1 Pod",
                Quoted(version.unwrap_or("")),
                Quoted(kind.unwrap_or(""))
            ));
        }
        Ok(self)
    }

    /// Decodes a pod from JSON text.
    pub fn parse(json: &'a str) -> Result<PodView<'a>, String> {
        serde_json::from_str::<Obj<PodView>>(json)
            .map_err(|e| bounded(format!("cannot decode the pod: {e}")))
            .and_then(|o| o.0.check_type())
    }

    /// Decodes a pod (or pod template) from a JSON value.
    pub fn from_value(value: &'a Value) -> Result<PodView<'a>, String> {
        Obj::<PodView>::deserialize(value)
            .map_err(|e| bounded(format!("cannot decode the pod: {e}")))
            .and_then(|o| o.0.check_type())
    }

    pub fn annotations(&self) -> Option<&StrMap<'a>> {
        self.metadata.as_ref().and_then(|m| m.annotations.as_ref())
    }

    pub fn labels(&self) -> Option<&StrMap<'a>> {
        self.metadata.as_ref().and_then(|m| m.labels.as_ref())
    }

    /// The pod's name, else its generateName.
    pub fn display_name(&self) -> Option<&str> {
        let m = self.metadata.as_ref()?;
        m.name.as_deref().or(m.generate_name.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_engine_needs_and_skips_the_rest() {
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"1","a":"2"},
            "managedFields":[{"x":{"y":[1,2]}}]},"spec":{"containers":[{"name":"c","image":"i",
            "volumeMounts":[{"name":"v","mountPath":"/m"}],"env":[{"name":"E","value":"\u00e9"}]}],
            "volumes":[],"shareProcessNamespace":true,"dnsPolicy":"ClusterFirst"}}"#;
        let pod = PodView::parse(json).unwrap();
        assert_eq!(pod.display_name(), Some("p"));
        assert_eq!(pod.annotations().unwrap().get("a"), Some("2"));
        let spec = pod.spec.unwrap().0;
        assert_eq!(
            spec.containers[0].volume_mounts.as_ref().unwrap()[0].mount_path,
            "/m"
        );
        assert_eq!(spec.volumes.map(|v| v.len()), Some(0));
        assert!(spec.init_containers.is_none());
        assert_eq!(spec.share_process_namespace, Some(true));
    }

    #[test]
    fn rejects_what_is_not_a_pod() {
        for bad in [
            r#""text""#,
            r#"[]"#,
            r#"{"kind":"Service","apiVersion":"v1"}"#,
            r#"{"apiVersion":"apps/v1","kind":"Pod"}"#,
            r#"{"spec":{"containers":"x"}}"#,
            r#"{"spec":{}}"#,
            r#"{"spec":{"containers":[{"image":"no-name"}]}}"#,
            r#"{"metadata":{"annotations":{"a":1}},"spec":{"containers":[]}}"#,
            r#"{"spec":{"containers":[],"volumes":{"name":"x"}}}"#,
            r#"{"spec":{"containers":[{"name":"a","volumeMounts":[{"name":"v"}]}]}}"#,
            r#"{"spec":["x"]}"#,
            r#"{"metadata":[],"spec":{"containers":[]}}"#,
            r#"{"spec":{"containers":[["a"]]}}"#,
        ] {
            assert!(PodView::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_uid_needs_every_app_container_to_agree() {
        let uid = |spec: &str| {
            let json = format!(r#"{{"spec":{spec}}}"#);
            PodView::parse(&json).unwrap().spec.unwrap().0.app_uid()
        };
        let c = |sc: &str| format!(r#"{{"name":"c{}","securityContext":{sc}}}"#, sc.len());
        assert_eq!(uid(r#"{"containers":[{"name":"a"}]}"#), None);
        assert_eq!(
            uid(
                r#"{"securityContext":{"runAsUser":1001},"containers":[{"name":"a"},{"name":"b"}]}"#
            ),
            Some(1001)
        );
        let own = c(r#"{"runAsUser":7}"#);
        let spec = format!(
            r#"{{"securityContext":{{"runAsUser":1001}},"containers":[{own},{{"name":"b"}}]}}"#
        );
        assert_eq!(uid(&spec), None, "containers disagree");
        let spec = format!(
            r#"{{"securityContext":{{"runAsUser":7}},"containers":[{own},{{"name":"b"}}]}}"#
        );
        assert_eq!(uid(&spec), Some(7));
        let spec = format!(r#"{{"containers":[{own}]}}"#);
        assert_eq!(uid(&spec), Some(7));
        let spec = format!(r#"{{"containers":[{own},{{"name":"b"}}]}}"#);
        assert_eq!(uid(&spec), None, "one container's uid is the image's");
        assert_eq!(
            uid(r#"{"securityContext":{"runAsUser":0},"containers":[{"name":"a"}]}"#),
            Some(0)
        );
        assert_eq!(uid(r#"{"containers":[]}"#), None);
    }

    #[test]
    fn null_fields_read_as_absent() {
        let pod = PodView::parse(
            r#"{"metadata":{"annotations":null},"spec":{"containers":[],"volumes":null}}"#,
        )
        .unwrap();
        assert!(pod.annotations().is_none());
        assert!(pod.spec.unwrap().0.volumes.is_none());
    }
}
