/**
 * `new Date(ms).toISOString()`, with the text up to the second kept from the last call: readings
 * forwarded together were mostly taken within the same second, and building the Date and its
 * text took 0.45 µs per CloudEvent, about as much as the rest of the event's attributes together.
 */
let second = Number.NaN
/** `YYYY-MM-DDTHH:MM:SS.` of `second` */
let head = ''

export function isoTime (ms: number): string {
  if (!Number.isInteger(ms)) return new Date(ms).toISOString()
  const s = Math.floor(ms / 1000)
  if (s !== second) {
    // slice(0, -4) and not a fixed length: years past 9999 are written with six digits.
    head = new Date(s * 1000).toISOString().slice(0, -4)
    second = s
  }
  const millis = ms - s * 1000
  return head + (millis < 10 ? '00' : millis < 100 ? '0' : '') + String(millis) + 'Z'
}
