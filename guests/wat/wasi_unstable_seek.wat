;; wasi_unstable_seek: imports wasi_unstable.fd_seek, whose `whence` values differ from
;; wasi_snapshot_preview1's (the first snapshot numbers cur, end, set as 0, 1, 2). The host
;; offers only the wasi_unstable functions that are the same in both, so a deploy refuses it.
(module
  (import "wasi_unstable" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (drop (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 1))
)
