;; shared_memory: a guest whose exported memory is shared (the threads proposal). The host
;; binds unshared memories only, so a deploy refuses it.
(module
  (memory (export "memory") 1 1 shared)
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (i32.const 1))
)
