// Decoding of the binary preview frames of the WebSocket event stream
// (docs/websocket.md): a "KPV1" header followed by a JPEG of the latent
// preview.
//
//   offset size field
//   0      4    magic "KPV1"
//   4      2    header length H, big-endian (the JPEG starts at H)
//   6      2    step (1-based)
//   8      2    steps
//   10     2    preview width
//   12     2    preview height
//   14     1    image index within the job
//   15     1    job id length L
//   16     L    job id (ASCII)
//   H      …    JPEG

const FIXED = 16;

/**
 * Parses a preview frame. Returns {job, step, steps, width, height, index,
 * jpeg} where jpeg is a Uint8Array view of the frame, or throws on a frame
 * that is not one.
 */
export function decodePreview(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  if (bytes.length < FIXED || bytes[0] !== 0x4b || bytes[1] !== 0x50 || bytes[2] !== 0x56 || bytes[3] !== 0x31) {
    throw new Error('not a preview frame');
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = dv.getUint16(4);
  const l = bytes[15];
  if (l === 0 || h < FIXED + l || h > bytes.length) throw new Error('preview header length out of range');
  let job = '';
  for (let i = 0; i < l; i++) job += String.fromCharCode(bytes[FIXED + i]);
  return {
    job,
    step: dv.getUint16(6),
    steps: dv.getUint16(8),
    width: dv.getUint16(10),
    height: dv.getUint16(12),
    index: bytes[14],
    jpeg: bytes.subarray(h),
  };
}
