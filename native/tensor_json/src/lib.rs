//! The model service's two large JSON request bodies, decoded straight into a float32 buffer
//! the caller owns, with the GIL released (ml/serving/codec.py calls it).
//!
//! Why native: on a 64-row body the decode is a third of what the event loop spends on a
//! request, and every Python JSON parser holds the GIL for it, so the inference thread waits
//! for the loop on its way out of onnxruntime (docs/PERFORMANCE.md). serde_json does the
//! parsing; this file only says which shapes it takes. Anything else (every malformed body
//! included) returns None and the Python checked path decides and words the error, so this
//! code never has to explain a mistake.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The caller's buffer, filled from its start.
struct Sink<'a> {
    out: &'a mut [f32],
    len: usize,
}

impl Sink<'_> {
    /// A value float32 cannot hold (1e39) is refused here, as numpy's checked cast refuses it.
    fn push<E: de::Error>(&mut self, value: f64) -> Result<(), E> {
        let narrow = value as f32;
        if !narrow.is_finite() {
            return Err(E::custom("beyond float32"));
        }
        let slot = self
            .out
            .get_mut(self.len)
            .ok_or_else(|| E::custom("buffer full"))?;
        *slot = narrow;
        self.len += 1;
        Ok(())
    }
}

/// One JSON number; any other value (string, bool, null, array, object) is an error.
struct Number<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for Number<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<(), D::Error> {
        input.deserialize_f64(self)
    }
}

impl<'de> Visitor<'de> for Number<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    // an integer beyond 64 bits comes as the nearest double, as orjson reads it
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.0.push(value)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.0.push(value as f64)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.0.push(value as f64)
    }
}

/// A flat array of numbers -> how many it held.
struct Flat<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for Flat<'_, '_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<usize, D::Error> {
        input.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Flat<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<usize, A::Error> {
        let start = self.0.len;
        while items.next_element_seed(Number(self.0))?.is_some() {}
        Ok(self.0.len - start)
    }
}

/// A non-empty array of equally long, non-empty arrays of numbers -> (rows, columns).
struct Rows<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for Rows<'_, '_> {
    type Value = (usize, usize);
    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<(usize, usize), D::Error> {
        input.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_> {
    type Value = (usize, usize);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut rows: A) -> Result<(usize, usize), A::Error> {
        let (mut count, mut width) = (0, 0);
        while let Some(columns) = rows.next_element_seed(Flat(self.0))? {
            if count > 0 && columns != width {
                return Err(de::Error::custom("ragged rows"));
            }
            width = columns;
            count += 1;
        }
        if count == 0 || width == 0 {
            return Err(de::Error::custom("no numbers"));
        }
        Ok((count, width))
    }
}

/// `{"instances": rows}` and nothing else (a repeated key is refused: the checked path decides
/// what it means).
struct Instances<'s, 'a>(&'s mut Sink<'a>);

impl<'de> Visitor<'de> for Instances<'_, '_> {
    type Value = (usize, usize);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{\"instances\": rows}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<(usize, usize), A::Error> {
        if fields.next_key::<String>()?.as_deref() != Some("instances") {
            return Err(de::Error::custom("not {\"instances\": ...}"));
        }
        let shape = fields.next_value_seed(Rows(self.0))?;
        if fields.next_key::<String>()?.is_some() {
            return Err(de::Error::custom("a second key"));
        }
        Ok(shape)
    }
}

/// Object members kept as their raw JSON text, to be written back without the tensor's data.
type Members = Vec<(String, Box<RawValue>)>;

fn add_member<E: de::Error>(
    members: &mut Members,
    key: String,
    value: Box<RawValue>,
) -> Result<(), E> {
    if members.iter().any(|(seen, _)| *seen == key) {
        return Err(E::custom("a repeated key"));
    }
    members.push((key, value));
    Ok(())
}

/// The one tensor object of `inputs`: its `data` into the sink, the rest kept raw.
struct Tensor<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for Tensor<'_, '_> {
    type Value = Members;
    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<Members, D::Error> {
        input.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Tensor<'_, '_> {
    type Value = Members;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Members, A::Error> {
        let mut members = Members::new();
        let mut data = None;
        while let Some(key) = fields.next_key::<String>()? {
            if key == "data" {
                if data.is_some() {
                    return Err(de::Error::custom("a repeated key"));
                }
                data = Some(fields.next_value_seed(Flat(&mut *self.0))?);
            } else {
                add_member(&mut members, key, fields.next_value()?)?;
            }
        }
        match data {
            Some(count) if count > 0 => Ok(members),
            _ => Err(de::Error::custom("no numbers in 'data'")),
        }
    }
}

/// `inputs`: exactly one tensor.
struct Inputs<'s, 'a>(&'s mut Sink<'a>);

impl<'de> DeserializeSeed<'de> for Inputs<'_, '_> {
    type Value = Members;
    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<Members, D::Error> {
        input.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Inputs<'_, '_> {
    type Value = Members;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("one tensor")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut tensors: A) -> Result<Members, A::Error> {
        let tensor = tensors.next_element_seed(Tensor(&mut *self.0))?;
        match (tensor, tensors.next_element::<&RawValue>()?) {
            (Some(members), None) => Ok(members),
            _ => Err(de::Error::custom("not exactly one input")),
        }
    }
}

/// An inference request: -> (the document's other members, the tensor's other members).
struct Infer<'s, 'a>(&'s mut Sink<'a>);

impl<'de> Visitor<'de> for Infer<'_, '_> {
    type Value = (Members, Members);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<(Members, Members), A::Error> {
        let mut members = Members::new();
        let mut tensor = None;
        while let Some(key) = fields.next_key::<String>()? {
            if key == "inputs" {
                if tensor.is_some() {
                    return Err(de::Error::custom("a repeated key"));
                }
                tensor = Some(fields.next_value_seed(Inputs(&mut *self.0))?);
            } else {
                add_member(&mut members, key, fields.next_value()?)?;
            }
        }
        tensor
            .map(|t| (members, t))
            .ok_or_else(|| de::Error::custom("no 'inputs'"))
    }
}

/// `{members..., "inputs": [{tensor members...}]}`: the request without the tensor's data.
fn write_light(members: &Members, tensor: &Members) -> Vec<u8> {
    fn object(out: &mut Vec<u8>, members: &Members) {
        for (key, value) in members {
            // a String always serialises
            serde_json::to_writer(&mut *out, key).expect("a string key");
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
            out.push(b',');
        }
    }
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    object(&mut out, members);
    out.extend_from_slice(b"\"inputs\":[{");
    object(&mut out, tensor);
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.extend_from_slice(b"}]}");
    out
}

/// The caller's writable, C-contiguous float32 buffer as an address and a length, so that the
/// parse can run without the GIL (a raw pointer cannot cross into the closure).
fn target(out: &PyBuffer<f32>) -> PyResult<(usize, usize)> {
    if out.readonly() || !out.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "out must be a writable, C-contiguous float32 buffer",
        ));
    }
    Ok((out.buf_ptr() as usize, out.item_count()))
}

/// # Safety
/// `address`/`capacity` come from a live, writable float32 buffer the caller keeps (and does
/// not touch) for the duration of the call.
unsafe fn sink_at<'a>(address: usize, capacity: usize) -> Sink<'a> {
    let out = std::slice::from_raw_parts_mut(address as *mut f32, capacity);
    Sink { out, len: 0 }
}

/// `{"instances": [[numbers], ...]}` -> (rows, columns), the values written row after row into
/// `out`; None for any other body, a ragged one, a value beyond float32, or one that does not
/// fit in `out`.
#[pyfunction]
fn instances(py: Python<'_>, body: &[u8], out: PyBuffer<f32>) -> PyResult<Option<(usize, usize)>> {
    let (address, capacity) = target(&out)?;
    Ok(py.detach(move || {
        // SAFETY: `out` is held by this frame until the closure returns
        let mut sink = unsafe { sink_at(address, capacity) };
        let mut input = serde_json::Deserializer::from_slice(body);
        let shape = input.deserialize_map(Instances(&mut sink)).ok()?;
        input.end().ok()?;
        Some(shape)
    }))
}

/// An Open Inference Protocol request whose `inputs` hold one tensor with a non-empty flat
/// numeric `data` -> (the request's JSON without that `data`, how many values it held), the
/// values written into `out`; None otherwise. The caller checks the rest as always.
#[pyfunction]
fn infer<'py>(
    py: Python<'py>,
    body: &[u8],
    out: PyBuffer<f32>,
) -> PyResult<Option<(Bound<'py, PyBytes>, usize)>> {
    let (address, capacity) = target(&out)?;
    let decoded = py.detach(move || {
        // SAFETY: as in `instances`
        let mut sink = unsafe { sink_at(address, capacity) };
        let mut input = serde_json::Deserializer::from_slice(body);
        let (members, tensor) = input.deserialize_map(Infer(&mut sink)).ok()?;
        input.end().ok()?;
        Some((write_light(&members, &tensor), sink.len))
    });
    Ok(decoded.map(|(light, count)| (PyBytes::new(py, &light), count)))
}

#[pymodule]
fn tensor_json(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(instances, module)?)?;
    module.add_function(wrap_pyfunction!(infer, module)?)?;
    Ok(())
}
