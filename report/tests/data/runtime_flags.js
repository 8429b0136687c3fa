// What `tally run` gave node: its pid and NODE_OPTIONS; then compiles a hot function, so the
// perf map has a JavaScript entry.
function hot(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s += i % 7;
  return s;
}
let total = 0;
for (let i = 0; i < 2000; i++) total += hot(1000);
console.log(`pid=${process.pid}`);
console.log(`NODE_OPTIONS=${process.env.NODE_OPTIONS}`);
console.log(`total=${total}`);
