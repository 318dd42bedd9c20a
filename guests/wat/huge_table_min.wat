;; huge_table_min: a guest whose funcref table starts at 4,194,304 elements (32 MiB of
;; references). Over the tables' budget (1/8 of --max-memory) of any node with --max-memory
;; below 256 MiB, so a deploy there refuses it.
(module
  (memory (export "memory") 1)
  (table 4194304 funcref)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (i32.const 1))
)
