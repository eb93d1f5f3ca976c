// Package bufpool keeps byte buffers for reuse: a pull decodes frames into
// the buffers of frames it is done with, and a server reads the frames it
// sends into the buffers of frames already sent.
//
// On this project's VM a page touched for the first time costs more than
// most work done on it: page faults and the zeroing of fresh memory were
// a quarter of a cold pull's CPU, and more than a quarter of the server's while it
// sent frames. A Pool gives the smallest free buffer that fits, within
// twice the size asked plus Round, so that the memory a caller counts by
// the length of its buffers stays within twice that in capacity.
package bufpool
