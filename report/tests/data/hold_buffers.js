// A node program whose named function keeps Buffers alive: 2,000 of 64 KiB (125 MiB) in a
// module-level array. It ends with process.exit() so that the Buffers are still live when the
// final dump is written (a normal end tears the isolate down and frees them first).
const kept = [];

function holdBuffers(count) { // HOLD_FUNCTION
  for (let i = 0; i < count; i++) {
    kept.push(Buffer.alloc(65536, i & 255));
  }
}

for (let round = 0; round < 20; round++) {
  holdBuffers(100);
}
console.log(`kept ${kept.length} buffers`);
process.exit(0);
