/**
 * freePort (scripts/ports.ts) in the tests: for mosquitto (startMosquitto starts again on a new
 * port when its log says the address is in use), an address where nothing listens, a port a test
 * must know before the daemon is ready (a sensor that connects the moment systemd hears READY=1),
 * or one it moves a listener to on reload. A spawned daemon's broker and admin endpoint listen on
 * port 0 and the test reads the real ports back (DaemonRun.ports, pinPorts for restarts).
 */
export { freePort } from '../../scripts/ports.js'
