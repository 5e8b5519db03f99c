//! L16: uncompressed 16-bit linear PCM in network byte order (RFC 3551 §4.5.11). The mixer
//! runs at 8 kHz mono, so only `L16/8000/1` is accepted (see [`super::Codec::l16`]).

/// Decodes big-endian 16-bit samples from `payload` into `out`; returns the samples written
/// (a trailing odd byte is ignored).
pub fn decode(payload: &[u8], out: &mut [i16]) -> usize {
    let mut n = 0;
    for (o, pair) in out.iter_mut().zip(payload.chunks_exact(2)) {
        *o = i16::from_be_bytes([pair[0], pair[1]]);
        n += 1;
    }
    n
}

/// Encodes `samples` big-endian into `out` (twice as long).
pub fn encode(samples: &[i16], out: &mut [u8]) {
    for (pair, &s) in out.chunks_exact_mut(2).zip(samples) {
        pair.copy_from_slice(&s.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_byte_order_round_trip() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 0x1234];
        let mut bytes = [0u8; 12];
        encode(&samples, &mut bytes);
        assert_eq!(&bytes[..4], &[0, 0, 0, 1]);
        assert_eq!(&bytes[4..6], &[0xFF, 0xFF]);
        assert_eq!(&bytes[10..], &[0x12, 0x34]);
        let mut back = [7i16; 6];
        assert_eq!(decode(&bytes, &mut back), 6);
        assert_eq!(back, samples);
        // An odd trailing byte is not a sample.
        assert_eq!(decode(&bytes[..5], &mut back), 2);
    }
}
