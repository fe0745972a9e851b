//! A minimal GGUF writer for tests: builds well-formed files piece by piece, so each test can
//! then break exactly one thing.
#![allow(dead_code)]

/// Raw little-endian encoders of GGUF pieces.
pub fn u32le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn gstr(s: &[u8]) -> Vec<u8> {
    let mut b = u64le(s.len() as u64);
    b.extend_from_slice(s);
    b
}

/// A KV with a raw value encoding (`ty` is the GGUF value type id).
pub fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = gstr(key.as_bytes());
    b.extend(u32le(ty));
    b.extend_from_slice(value);
    b
}

pub fn kv_u32(key: &str, v: u32) -> Vec<u8> {
    kv(key, 4, &u32le(v))
}

pub fn kv_str(key: &str, v: &str) -> Vec<u8> {
    kv(key, 8, &gstr(v.as_bytes()))
}

/// An array value of fixed-size elements already encoded.
pub fn array(elem_ty: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut b = u32le(elem_ty);
    b.extend(u64le(count));
    b.extend_from_slice(elems);
    b
}

pub fn string_array(items: &[&str]) -> Vec<u8> {
    let elems: Vec<u8> = items.iter().flat_map(|s| gstr(s.as_bytes())).collect();
    array(8, items.len() as u64, &elems)
}

/// A tensor info with a relative data offset.
pub fn tensor_info(name: &str, ne: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = gstr(name.as_bytes());
    b.extend(u32le(ne.len() as u32));
    for &d in ne {
        b.extend(u64le(d));
    }
    b.extend(u32le(ty));
    b.extend(u64le(offset));
    b
}

/// A whole file: header, KVs, tensor infos, padding to `alignment`, then `data`.
pub fn file(version: u32, kvs: &[Vec<u8>], infos: &[Vec<u8>], alignment: usize, data: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(u32le(version));
    b.extend(u64le(infos.len() as u64));
    b.extend(u64le(kvs.len() as u64));
    for k in kvs {
        b.extend_from_slice(k);
    }
    for t in infos {
        b.extend_from_slice(t);
    }
    while !b.len().is_multiple_of(alignment) {
        b.push(0);
    }
    b.extend_from_slice(data);
    b
}

/// A small valid file: two F32 tensors of 8 and 4 elements and three KVs.
pub fn small_valid() -> Vec<u8> {
    let kvs = [
        kv_str("general.architecture", "test"),
        kv_u32("test.block_count", 1),
        kv("tokenizer.ggml.tokens", 9, &string_array(&["a", "bc", ""])),
    ];
    let infos = [tensor_info("a.weight", &[4, 2], 0, 0), tensor_info("b.bias", &[4], 0, 32)];
    let data: Vec<u8> = (0..48u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    file(3, &kvs, &infos, 32, &data[..48])
}
