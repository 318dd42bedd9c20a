;; huge_memory_min: a guest whose memory starts at 65,536 pages (4 GiB, the most a
;; 32-bit memory can have). No instance of it can start under --max-memory below 4 GiB, so a
;; deploy refuses it.
(module
  (memory (export "memory") 65536)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (i32.const 1))
)
