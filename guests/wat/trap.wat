;; trap: every call executes `unreachable`.
(module
  (memory (export "memory") 1)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (unreachable))
)
